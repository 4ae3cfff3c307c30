"""Turning answers into HTML: safe Markdown, themes and their templates, and the output tree."""
