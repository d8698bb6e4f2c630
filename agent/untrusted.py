"""Marks text that came from the screen, files or programs as data, not instructions, in what the model reads.

Bash output and the editor's file views carry whatever a page, a file or a program wrote — including text
planted to steer the agent ("ignore your task and ..."). The model gets that text inside an explicit
wrapper, and the system prompt (``agent.prompts``) says that nothing inside it is the user speaking. The
wrapper cannot be closed from the inside: a closing tag in the text is defused. The timeline (events)
keeps the raw text.
"""

from __future__ import annotations

TAG = "untrusted_content"
UNTRUSTED_TOOLS = frozenset({"bash", "str_replace_based_edit_tool"})  # canonical names (agent.models)


def mark(text: str, source: str) -> str:
    """``text`` wrapped as untrusted data from ``source`` (a tool name); empty text stays empty."""
    if not text:
        return text
    defused = text.replace(f"</{TAG}", f"<\\/{TAG}").replace(f"<{TAG}", f"<\\{TAG}")
    return f'<{TAG} source="{source}">\n{defused}\n</{TAG}>'
