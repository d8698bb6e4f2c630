"""Evaluation: task suites with checkers run through the session runner (the floor above ``web``)."""
