"""How a module answering one of the book's exports the book's names.

Each module of ``fastnn.book`` lists the public names of the book's module it answers, in the
book's order, and where fastnn keeps each.  :func:`export` binds those fastnn has, sets
``__all__`` to them (so ``from common.layers import *`` hands a script what the book's star
import does, ``np`` and the functions included), and returns a module ``__getattr__`` that
raises :class:`MissingName` for the others: a name of the book that fastnn does not have (yet)
fails where a script asks for it, with an error naming the name, the book's module and where
fastnn would keep it.  A star import cannot raise for a name it does not find, so those names
are left out of ``__all__``; the runner (:mod:`fastnn.book.runner`) turns the ``NameError`` or
``ImportError`` that a script then meets into the same message.
"""
import importlib

__all__ = ["MissingName", "export", "missing_names"]

# book module -> {name: fastnn modules searched}, for the names fastnn lacks in this process
_MISSING = {}


class MissingName(AttributeError):
    """A public name of the book's module that fastnn does not provide."""


def _message(book_module, name, sources):
    where = " or ".join(f"{source}.{name}" for source in sources)
    return (f"{name} of the book's {book_module} is not in this fastnn (looked for {where}); "
            "run the book's own module for it, or a fastnn that has it")


def export(namespace, book_module, names):
    """Bind in ``namespace`` (a module's globals) the book's public ``names`` of
    ``book_module`` from fastnn.

    ``names`` maps each name, in the book's order, to a fastnn module name or a tuple of them
    searched in turn, or to None for a name already bound in ``namespace`` (``np``, ``os``).
    Returns ``(__all__, __getattr__)`` for the module.
    """
    exported, missing = [], {}
    for name, sources in names.items():
        if sources is None:
            exported.append(name)
            continue
        sources = (sources,) if isinstance(sources, str) else tuple(sources)
        for source in sources:
            try:
                module = importlib.import_module(source)
            except ModuleNotFoundError as exc:
                if exc.name is None or not source.startswith(exc.name):
                    raise  # a module that exists failed to import: not a missing name
                continue
            if hasattr(module, name):
                namespace[name] = getattr(module, name)
                exported.append(name)
                break
        else:
            missing[name] = sources
    _MISSING[book_module] = missing

    def __getattr__(name):
        if name in missing:
            raise MissingName(_message(book_module, name, missing[name]))
        raise AttributeError(f"module {namespace['__name__']!r} has no attribute {name!r}")

    return exported, __getattr__


def missing_names():
    """``{(book module, name): message}`` for every book name that fastnn lacks, over the
    modules imported so far."""
    return {(module, name): _message(module, name, sources)
            for module, names in _MISSING.items() for name, sources in names.items()}
