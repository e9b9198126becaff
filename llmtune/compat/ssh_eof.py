"""A host that vanishes mid-run must fail alone, not abort pyinfra's run for every host.

When the SSH peer disappears while paramiko opens a channel, ``Transport.open_channel`` re-raises
the reader thread's saved exception, an ``EOFError``. pyinfra 3.10 treats a lost connection as a
host error only for ``SSHException``/``OSError``/``TimeoutError``; an ``EOFError`` escapes its
per-host greenlet and ends the whole run ("An internal exception occurred"), so the other hosts
never finish. Seen for real: a test host killed while pyinfra read a fact on it.

:func:`install` makes ``open_channel`` report that case as the ``SSHException`` it is. It is
applied by llmtune's inventory loader, i.e. to the pyinfra runs that use llmtune inventories,
and by the doctor's remote reader. Remove once pyinfra handles ``EOFError`` itself.
"""

from __future__ import annotations

import functools
from typing import Any

from paramiko import SSHException, Transport

_MARK = "_llmtune_eof_as_ssh_exception"


def install() -> None:
    original = Transport.open_channel
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def open_channel(self: Transport, *args: Any, **kwargs: Any) -> Any:
        try:
            return original(self, *args, **kwargs)
        except EOFError as exc:
            raise SSHException("connection lost (the host closed it)") from exc

    setattr(open_channel, _MARK, True)
    Transport.open_channel = open_channel  # type: ignore[method-assign]
