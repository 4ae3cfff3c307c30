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

from typing import Any

# What cmarkgfm's bindings leave out, from cmark-gfm.h (the structure's layout included).
_FREEING = """
typedef struct cmark_node cmark_node;
typedef struct cmark_mem {
  void *(*calloc)(size_t, size_t);
  void *(*realloc)(void *, size_t);
  void (*free)(void *);
} cmark_mem;
cmark_mem *cmark_get_default_mem_allocator(void);
void cmark_node_free(cmark_node *node);
"""
EXTENSIONS = (b"table", b"strikethrough")


class CmarkGfm:
    """Markdown to HTML with cmark-gfm's tables and strikethrough; nothing leaks."""

    def __init__(self, compiled: Any, ffi: Any) -> None:
        lib = compiled.lib
        ffi.cdef(_FREEING)
        exported = ffi.dlopen(compiled.__file__)
        self._lib, self._c, self._ffi = lib, compiled.ffi, ffi
        self._free_node = exported.cmark_node_free
        self._free = exported.cmark_get_default_mem_allocator().free
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
                self._free_node(self._ffi.cast("cmark_node *", self._address(root)))
        finally:
            lib.cmark_parser_free(parser)

    def _string(self, result: Any) -> str:
        """The C string `result` as text, then freed as cmark allocated it."""
        try:
            text: str = self._c.string(result).decode("utf-8")
            return text
        finally:
            self._free(self._ffi.cast("void *", self._address(result)))

    def _address(self, pointer: Any) -> int:
        # A pointer from cmarkgfm's bindings, passed to a function of ours: by its address.
        return int(self._c.cast("uintptr_t", pointer))


def load() -> CmarkGfm | None:
    """The engine, or None where cmarkgfm is missing or its build does not export what
    freeing needs."""
    try:
        import cffi  # type: ignore[import-untyped]
        from cmarkgfm import _cmark  # type: ignore[import-untyped]
    except ImportError:
        return None
    try:
        return CmarkGfm(_cmark, cffi.FFI())
    except (OSError, AttributeError, LookupError, cffi.FFIError):
        return None
