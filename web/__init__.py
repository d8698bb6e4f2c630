"""The web service: REST, live stream, approvals, takeover, persistence and auth."""
