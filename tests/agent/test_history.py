"""Screenshot pruning semantics, cache breakpoints, repair — on plain message lists."""

from __future__ import annotations

import base64
import copy
import hashlib
from typing import Any

import pytest

from agent import history as hist


def turn(i: int, images: int = 1) -> list[dict[str, Any]]:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": f"img{i}"}}
    return [
        {"role": "assistant", "content": [{"type": "tool_use", "id": f"t{i}", "name": "computer", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"t{i}",
                                      "content": [{"type": "text", "text": "ok"}] + [image] * images}]},
    ]


def sent_images(history: list[dict[str, Any]]) -> list[str]:
    return [c["source"]["data"] for m in history if isinstance(m["content"], list) for b in m["content"]
            if b.get("type") == "tool_result" for c in b["content"] if c["type"] == "image"]


@pytest.mark.parametrize(("keep", "chunk"), [(5, 3), (3, 3), (3, 1), (4, 10)])
def test_pruning_never_exceeds_keep_and_changes_only_every_chunk(keep: int, chunk: int) -> None:
    history: list[dict[str, Any]] = [{"role": "user", "content": "task"}]
    removals = []
    effective = min(chunk, keep)
    for t in range(1, 30):
        history += turn(t)
        removed_now = hist.prune_images(history, keep, chunk)
        present = sent_images(history)
        assert len(present) <= keep
        assert present == [f"img{k}" for k in range(t - len(present) + 1, t + 1)]  # the newest, in order
        if t > keep:
            assert len(present) >= keep - effective + 1
        if removed_now:
            assert removed_now == effective
            removals.append(t)
    assert removals == list(range(keep + 1, 30, effective))


def test_the_references_rounding_would_send_2n_minus_1() -> None:
    # The reference removes (T - N) rounded DOWN to a multiple of the threshold: with N=3 it sends 5.
    total, keep = 5, 3
    reference_removed = (total - keep) - (total - keep) % keep
    assert total - reference_removed == 2 * keep - 1
    assert total - hist.images_to_remove(total, keep, keep) == 2  # ours: never more than N


def test_pruning_state_survives_a_restart() -> None:
    history: list[dict[str, Any]] = [{"role": "user", "content": "task"}]
    for t in range(1, 8):
        history += turn(t)
        hist.prune_images(history, 5, 3)
    assert hist.count_images(history) == (4, 3)
    assert hist.prune_images(history, 5, 3) == 0  # nothing more to do; placeholders keep the count


def marked_user_turns(history: list[dict[str, Any]]) -> list[int]:
    """Indices (among the user turns) whose last block carries a cache breakpoint."""
    users = [m for m in history if m["role"] == "user"]
    return [k for k, m in enumerate(users) if "cache_control" in m["content"][-1]]


def test_cache_breakpoints_on_a_copy_of_the_two_newest_user_turns() -> None:
    history: list[dict[str, Any]] = [{"role": "user", "content": "task"}, *turn(1), *turn(2)]
    marked = hist.with_cache_breakpoints(history, anchor=False)
    flags = [("cache_control" in m["content"][-1]) if m["role"] == "user" else None for m in marked]
    assert flags == [False, None, True, None, True]
    assert "cache_control" not in str(history)  # the stored history is untouched
    only_task = hist.with_cache_breakpoints([{"role": "user", "content": "task"}])
    assert only_task[0]["content"] == [{"type": "text", "text": "task", "cache_control": {"type": "ephemeral"}}]


def test_anchor_breakpoint_sits_before_the_oldest_screenshot_sent_and_moves_only_at_removals() -> None:
    history: list[dict[str, Any]] = [{"role": "user", "content": "task"}]
    anchors = []
    for t in range(1, 13):
        history += turn(t)
        hist.prune_images(history, 5, 3)
        marks = marked_user_turns(hist.with_cache_breakpoints(history))
        assert len(marks) <= 3  # + the system prompt's: the API's limit of 4
        users = [m for m in history if m["role"] == "user"]
        oldest = next(k for k, m in enumerate(users) if "'image'" in str(m))
        assert oldest - 1 in marks  # the user turn before the oldest screenshot still sent
        assert set(marks) == {oldest - 1, len(users) - 2, len(users) - 1}
        anchors.append(oldest - 1)
    # user turn k holds screenshot k; removals at screenshots 6, 9, 12 (keep 5, chunk 3)
    assert anchors == [0, 0, 0, 0, 0, 3, 3, 3, 6, 6, 6, 9]


def test_repair_answers_unrecorded_tool_uses_only() -> None:
    history: list[dict[str, Any]] = [{"role": "user", "content": "task"}, {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "x", "signature": "s"},
        {"type": "tool_use", "id": "a", "name": "computer", "input": {}},
        {"type": "tool_use", "id": "b", "name": "computer", "input": {}}]}]
    hist.add_tool_result(history, {"type": "tool_result", "tool_use_id": "a", "content": []})
    assert hist.repair(history) == ["b"]
    assert [b["tool_use_id"] for b in history[-1]["content"]] == ["a", "b"]
    assert hist.repair(history) == []


def test_user_text_goes_after_tool_results() -> None:
    history: list[dict[str, Any]] = [{"role": "user", "content": "task"}, *turn(1)]
    hist.add_user_text(history, "also this")
    assert [b["type"] for b in history[-1]["content"]] == ["tool_result", "text"]
    history.append({"role": "assistant", "content": [{"type": "text", "text": "done"}]})
    hist.add_user_text(history, "next")
    assert history[-1] == {"role": "user", "content": [{"type": "text", "text": "next"}]}


@pytest.mark.parametrize(("keep", "chunk"), [(5, 3), (2, 1), (3, 3), (1, 1)])
def test_each_request_rebuilds_from_the_final_history_and_its_manifest(keep: int, chunk: int) -> None:
    by_sha: dict[str, dict[str, Any]] = {}
    history: list[dict[str, Any]] = [{"role": "user", "content": "go"}]
    sent: list[tuple[list[dict[str, Any]], dict[str, Any]]] = []
    for i in range(12):
        hist.prune_images(history, keep, chunk)
        sent.append((copy.deepcopy(history), hist.request_manifest(history)))
        data = base64.b64encode(f"screen {i}".encode()).decode()
        by_sha[hashlib.sha256(f"screen {i}".encode()).hexdigest()] = {
            "type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}}
        new = turn(i, images=0 if i % 4 == 3 else 1)  # some tools return no screenshot
        for block in new[1]["content"][0]["content"]:
            if block["type"] == "image":
                block["source"]["data"] = data
        history.extend(new)
    assert hist.count_images(history)[1] > 0  # the final history did lose screenshots
    for request, manifest in sent:
        assert hist.restore_request(history, manifest, lambda sha, media: by_sha[sha]) == request
    with pytest.raises(ValueError, match="slot 99"):
        hist.restore_request(history, {"last_message": 3, "images": [
            {"slot": 99, "sha256": "0" * 64, "media_type": "image/png"}]}, lambda sha, media: by_sha[sha])
