"""Tools the model calls: computer, bash, editor. Each returns a ToolResult or raises ToolError."""
