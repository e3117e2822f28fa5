"""The prompt component: versioned templates with labels, strict rendering, token-budgeted
context building."""
