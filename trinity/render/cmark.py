"""GitHub's cmark-gfm, through the C library that the `cmarkgfm` package ships.

cmarkgfm's own functions leak: they never free the syntax tree (`cmark_node_free` is not
in their bindings) nor the HTML string, about 6.5 KB an answer, 200 MB over a 10,000-page
site of three blocks a page. This module calls the same C functions and frees both, with
the two it lacks looked up in cmarkgfm's compiled module, where cmark exports them.
Where they cannot be found (a build of cmarkgfm that does not export them), `load` says
so with None and answers are rendered by the reference engine instead.

Options: cmark's safe mode (the default: raw HTML is dropped, and `javascript:`,
`vbscript:`, `file:` and `data:` links emptied; trinity.render.markdown renders such
answers with the reference instead), strikethrough only with two tildes and table
alignment as a style attribute, as markdown-it writes them.
"""

from __future__ import annotations

import ctypes
from typing import Any


class _Allocator(ctypes.Structure):
    """cmark's `cmark_mem` (cmark-gfm.h): how it allocates, and so how to free."""

    _fields_ = (
        ("calloc", ctypes.c_void_p),
        ("realloc", ctypes.c_void_p),
        ("free", ctypes.CFUNCTYPE(None, ctypes.c_void_p)),
    )


EXTENSIONS = (b"table", b"strikethrough")


class CmarkGfm:
    """Markdown to HTML with cmark-gfm's tables and strikethrough; nothing leaks."""

    def __init__(self, compiled: Any) -> None:
        lib = compiled.lib
        # ctypes, not a second cffi FFI: cffi would parse C declarations (and import
        # pycparser, 50 ms) on every build that renders a page.
        exported = ctypes.CDLL(compiled.__file__)
        exported.cmark_node_free.argtypes = [ctypes.c_void_p]
        exported.cmark_node_free.restype = None
        allocator = exported.cmark_get_default_mem_allocator
        allocator.restype = ctypes.POINTER(_Allocator)
        self._lib, self._ffi = lib, compiled.ffi
        self._free_node = exported.cmark_node_free
        self._free = allocator().contents.free
        self._options = (
            lib.CMARK_OPT_DEFAULT
            | lib.CMARK_OPT_STRIKETHROUGH_DOUBLE_TILDE
            | lib.CMARK_OPT_TABLE_PREFER_STYLE_ATTRIBUTES
        )
        lib.cmark_gfm_core_extensions_ensure_registered()
        self._extensions = [lib.cmark_find_syntax_extension(name) for name in EXTENSIONS]
        if compiled.ffi.NULL in self._extensions:
            raise LookupError("cmark-gfm has no table or strikethrough extension")

    def render(self, text: str) -> str:
        """`text` as HTML; UnicodeEncodeError for a string that is not valid Unicode (a
        lone surrogate), which cmark, reading UTF-8, cannot be given."""
        data = text.encode("utf-8")
        lib = self._lib
        parser = lib.cmark_parser_new(self._options)
        try:
            for extension in self._extensions:
                lib.cmark_parser_attach_syntax_extension(parser, extension)
            lib.cmark_parser_feed(parser, data, len(data))
            root = lib.cmark_parser_finish(parser)
            try:
                extensions = lib.cmark_parser_get_syntax_extensions(parser)
                return self._string(lib.cmark_render_html(root, self._options, extensions))
            finally:
                self._free_node(self._address(root))
        finally:
            lib.cmark_parser_free(parser)

    def _string(self, result: Any) -> str:
        """The C string `result` as text, then freed as cmark allocated it."""
        try:
            text: str = self._ffi.string(result).decode("utf-8")
            return text
        finally:
            self._free(self._address(result))

    def _address(self, pointer: Any) -> int:
        # A pointer from cmarkgfm's bindings, passed to a function found through ctypes.
        return int(self._ffi.cast("uintptr_t", pointer))


def load() -> CmarkGfm | None:
    """The engine, or None where cmarkgfm is missing or its build does not export what
    freeing needs."""
    try:
        from cmarkgfm import _cmark  # type: ignore[import-untyped]
    except ImportError:
        return None
    try:
        return CmarkGfm(_cmark)
    except (OSError, AttributeError, LookupError):
        return None
