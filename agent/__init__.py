"""The Claude computer-use loop: model client, history, retries, approvals, usage, events."""
