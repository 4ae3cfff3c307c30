"""The layout guardian's parts: what a built page is checked for in a real browser
(trinity.layout.browser), what it finds (findings), and the fixes that do not need a
model (fixes). The build's guard phase (trinity.guard) puts them together with re-asks."""
