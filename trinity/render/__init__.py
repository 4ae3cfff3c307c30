"""Turning answers into HTML: safe Markdown, themes and their templates, sitemaps."""
