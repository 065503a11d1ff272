"""Tracepoint text output: the kmem page events and a bounded ftrace-like buffer.

Follows the kernel's own text output:

- ``include/trace/events/kmem.h`` (6.x): the ``TP_printk`` formats of
  ``mm_page_alloc``, ``mm_page_free``, ``mm_page_free_batched``,
  ``mm_page_alloc_zone_locked``, ``mm_page_pcpu_drain`` and
  ``mm_page_alloc_extfrag``. Before ~5.12 the pfn was printed ``pfn=%lu``;
  pass ``pfn_hex=False`` for that form. Older differences (``cold=%d`` on
  ``mm_page_free_batched`` before 4.15) are not reproduced.
- ``include/trace/events/mmflags.h`` (6.1, no ``CONFIG_KASAN_HW_TAGS``): the
  ``__def_gfpflag_names`` table that ``show_gfp_flags`` walks with
  ``__print_flags`` (first matching mask wins, leftover bits print as one hex
  number, zero prints ``none``), over the 6.1 bit values of ``sim.gfp``.
  (6.3 dropped ``__GFP_ATOMIC`` from both.)
- ``kernel/trace/trace_output.c`` (``trace_print_context``, 6.x): the line
  prefix ``"%16s-%-7d [%03d] <irq-info> %5lu.%06lu: "`` followed by
  ``"<event>: <fields>"``; ``kernel/trace/trace.c`` (``print_event_info``)
  for the ``entries-in-buffer/entries-written`` header.

Simplifications:

- ``%p``: kernels since 4.15 hash ``%p`` in trace output (the ``hash-ptr``
  option, on by default). We print the *unhashed* value, as with
  ``hash-ptr`` off, as 16 zero-padded lowercase hex digits without ``0x``.
  A simulated ``struct page *`` is ``VMEMMAP_BASE + pfn * 64``
  (x86_64 without KASLR); NULL prints ``0000000000000000``.
- The real ring buffer is per CPU and overwrites whole pages; ``TraceBuffer``
  is one buffer of ``capacity_lines`` lines that drops the oldest line.
- Timestamps are simulated seconds, printed ``%5lu.%06lu`` after rounding to
  microseconds as ``ns2usecs`` does.

Compaction and migration modules add their events by formatting their own
fields text and calling ``TraceBuffer.emit``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

import cython

from compactsim.sim import gfp

VMEMMAP_BASE = 0xFFFFEA0000000000  # x86_64 vmemmap without KASLR
STRUCT_PAGE_SIZE = 64  # bytes, sizeof(struct page) on x86_64

_GFP_ZEROTAGS = 0x800000  # 6.1 ___GFP_ZEROTAGS; the simulator never sets it

# __def_gfpflag_names of 6.1, in the kernel's order: most bits first, so that
# GFP_HIGHUSER_MOVABLE|__GFP_COMP is printed rather than a list of bits.
GFPFLAG_NAMES: tuple[tuple[int, str], ...] = (
    (gfp.GFP_TRANSHUGE, "GFP_TRANSHUGE"),
    (gfp.GFP_TRANSHUGE_LIGHT, "GFP_TRANSHUGE_LIGHT"),
    (gfp.GFP_HIGHUSER_MOVABLE, "GFP_HIGHUSER_MOVABLE"),
    (gfp.GFP_HIGHUSER, "GFP_HIGHUSER"),
    (gfp.GFP_USER, "GFP_USER"),
    (gfp.GFP_KERNEL | gfp.__GFP_ACCOUNT, "GFP_KERNEL_ACCOUNT"),
    (gfp.GFP_KERNEL, "GFP_KERNEL"),
    (gfp.__GFP_RECLAIM | gfp.__GFP_IO, "GFP_NOFS"),
    (gfp.GFP_ATOMIC, "GFP_ATOMIC"),
    (gfp.GFP_NOIO, "GFP_NOIO"),
    (gfp.GFP_NOWAIT, "GFP_NOWAIT"),
    (gfp.__GFP_DMA, "GFP_DMA"),
    (gfp.__GFP_HIGHMEM, "__GFP_HIGHMEM"),
    (gfp.__GFP_DMA32, "GFP_DMA32"),
    (gfp.__GFP_HIGH, "__GFP_HIGH"),
    (gfp.__GFP_ATOMIC, "__GFP_ATOMIC"),
    (gfp.__GFP_IO, "__GFP_IO"),
    (gfp.__GFP_FS, "__GFP_FS"),
    (gfp.__GFP_NOWARN, "__GFP_NOWARN"),
    (gfp.__GFP_RETRY_MAYFAIL, "__GFP_RETRY_MAYFAIL"),
    (gfp.__GFP_NOFAIL, "__GFP_NOFAIL"),
    (gfp.__GFP_NORETRY, "__GFP_NORETRY"),
    (gfp.__GFP_COMP, "__GFP_COMP"),
    (gfp.__GFP_ZERO, "__GFP_ZERO"),
    (gfp.__GFP_NOMEMALLOC, "__GFP_NOMEMALLOC"),
    (gfp.__GFP_MEMALLOC, "__GFP_MEMALLOC"),
    (gfp.__GFP_HARDWALL, "__GFP_HARDWALL"),
    (gfp.__GFP_THISNODE, "__GFP_THISNODE"),
    (gfp.__GFP_RECLAIMABLE, "__GFP_RECLAIMABLE"),
    (gfp.__GFP_MOVABLE, "__GFP_MOVABLE"),
    (gfp.__GFP_ACCOUNT, "__GFP_ACCOUNT"),
    (gfp.__GFP_WRITE, "__GFP_WRITE"),
    (gfp.__GFP_RECLAIM, "__GFP_RECLAIM"),
    (gfp.__GFP_DIRECT_RECLAIM, "__GFP_DIRECT_RECLAIM"),
    (gfp.__GFP_KSWAPD_RECLAIM, "__GFP_KSWAPD_RECLAIM"),
    (_GFP_ZEROTAGS, "__GFP_ZEROTAGS"),
)


def gfp_flags_to_str(gfp_mask: int) -> str:
    """Render ``gfp_mask`` as ``show_gfp_flags`` does (``__print_flags``, "|")."""
    if gfp_mask < 0:
        raise ValueError(f"gfp flags must be non-negative, got {gfp_mask}")
    flags = int(gfp_mask)
    if not flags:
        return "none"
    names = []
    for mask, name in GFPFLAG_NAMES:
        if not flags:
            break
        if flags & mask == mask:
            names.append(name)
            flags &= ~mask
    if flags:  # bits with no name are printed as one hex number
        names.append(f"0x{flags:x}")
    return "|".join(names)


def pfn_to_page(pfn: int) -> int:
    """Simulated ``struct page *`` of ``pfn`` (vmemmap, no KASLR)."""
    if pfn < 0:
        raise ValueError(f"pfn must be non-negative, got {pfn}")
    return VMEMMAP_BASE + pfn * STRUCT_PAGE_SIZE


def _ptr(page_ptr: int | None) -> str:
    """``%p`` without hashing: 16 hex digits, zero-padded, no ``0x``."""
    return f"{page_ptr or 0:016x}"


def _pfn(pfn: int, pfn_hex: bool) -> str:
    return f"pfn=0x{pfn:x}" if pfn_hex else f"pfn={pfn}"


# Per-event fields text, exactly as each event's TP_printk.
# page_ptr None means a NULL page (a failed allocation): pfn prints as 0.

def fmt_mm_page_alloc(page_ptr: int | None, pfn: int, order: int,
                      migratetype: int, gfp_flags_str: str, *,
                      pfn_hex: bool = True) -> str:
    pfn = pfn if page_ptr else 0
    return (f"page={_ptr(page_ptr)} {_pfn(pfn, pfn_hex)} order={order} "
            f"migratetype={migratetype} gfp_flags={gfp_flags_str}")


def fmt_mm_page_free(page_ptr: int, pfn: int, order: int, *,
                     pfn_hex: bool = True) -> str:
    return f"page={_ptr(page_ptr)} {_pfn(pfn, pfn_hex)} order={order}"


def fmt_mm_page_free_batched(page_ptr: int, pfn: int, *,
                             pfn_hex: bool = True) -> str:
    return f"page={_ptr(page_ptr)} {_pfn(pfn, pfn_hex)} order=0"


def fmt_mm_page_alloc_zone_locked(page_ptr: int | None, pfn: int, order: int,
                                  migratetype: int, percpu_refill: bool, *,
                                  pfn_hex: bool = True) -> str:
    pfn = pfn if page_ptr else 0
    return (f"page={_ptr(page_ptr)} {_pfn(pfn, pfn_hex)} order={order} "
            f"migratetype={migratetype} percpu_refill={int(percpu_refill)}")


def fmt_mm_page_pcpu_drain(page_ptr: int, pfn: int, order: int,
                           migratetype: int, *, pfn_hex: bool = True) -> str:
    return (f"page={_ptr(page_ptr)} {_pfn(pfn, pfn_hex)} order={order} "
            f"migratetype={migratetype}")


def fmt_mm_page_alloc_extfrag(page_ptr: int, pfn: int, alloc_order: int,
                              fallback_order: int, pageblock_order: int,
                              alloc_migratetype: int,
                              fallback_migratetype: int,
                              change_ownership: bool, *,
                              pfn_hex: bool = True) -> str:
    # fragmenting is computed in TP_printk, not stored in the event.
    fragmenting = int(fallback_order < pageblock_order)
    return (f"page={_ptr(page_ptr)} {_pfn(pfn, pfn_hex)} "
            f"alloc_order={alloc_order} fallback_order={fallback_order} "
            f"pageblock_order={pageblock_order} "
            f"alloc_migratetype={alloc_migratetype} "
            f"fallback_migratetype={fallback_migratetype} "
            f"fragmenting={fragmenting} "
            f"change_ownership={int(change_ownership)}")


def format_line(time_s: float, cpu: int, task: str, pid: int,
                event_name: str, fields_text: str, *,
                flags: str = ".....") -> str:
    """One trace_pipe line: ``trace_print_context`` prefix plus the event.

    ``flags`` is the irq-info column (irqs-off, need-resched,
    hardirq/softirq, preempt-depth, migrate-disable in 6.x).
    """
    if time_s < 0:
        raise ValueError(f"time_s must be non-negative, got {time_s}")
    usecs = round(time_s * 1_000_000)  # ns2usecs rounds to the nearest us
    secs, usec_rem = divmod(usecs, 1_000_000)
    return (f"{task:>16}-{pid:<7} [{cpu:03d}] {flags} {secs:5d}.{usec_rem:06d}: "
            f"{event_name}: {fields_text}")


_HELP_HEADER = (
    "#                                _-----=> irqs-off/BH-disabled",
    "#                               / _----=> need-resched",
    "#                              | / _---=> hardirq/softirq",
    "#                              || / _--=> preempt-depth",
    "#                              ||| / _-=> migrate-disable",
    "#                              |||| /     delay",
    "#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION",
    "#              | |         |   |||||     |         |",
)


@cython.cclass
class TraceBuffer:
    """A bounded trace buffer that overwrites its oldest line when full.

    Events are off until enabled, as under ``/sys/kernel/tracing/events``. An extension
    type where compiled (sim/tracepoint.pxd): the hot paths ask `is_enabled` before they
    format a line, and that question is a C call.
    """

    def __init__(self, capacity_lines: int, events: Iterable[str] = ()):
        if capacity_lines < 1:
            raise ValueError(f"capacity_lines must be >= 1, got {capacity_lines}")
        self.capacity_lines = capacity_lines
        """Lines kept; older lines are overwritten."""
        self.entries_written = 0
        """Lines ever written, including those since overwritten."""
        self._lines: deque[str] = deque(maxlen=capacity_lines)
        self._enabled: set[str] = set(events)

    def enable(self, *event_names: str) -> None:
        self._enabled.update(event_names)

    def disable(self, *event_names: str) -> None:
        self._enabled.difference_update(event_names)

    def is_enabled(self, event_name: str) -> bool:
        return event_name in self._enabled

    def emit(self, time_s: float, cpu: int, task: str, pid: int,
             event_name: str, fields_text: str, *,
             flags: str = ".....") -> bool:
        """Record one event if it is enabled; return whether it was."""
        if event_name not in self._enabled:
            return False
        self._lines.append(format_line(time_s, cpu, task, pid, event_name,
                                       fields_text, flags=flags))
        self.entries_written += 1
        return True

    @property
    def entries_in_buffer(self) -> int:
        return len(self._lines)

    @property
    def overwritten(self) -> int:
        """Lines lost because the buffer was full."""
        return self.entries_written - len(self._lines)

    def lines(self) -> list[str]:
        """The lines held, oldest first."""
        return list(self._lines)

    def render(self, *, header: bool = False, nr_cpus: int = 1) -> str:
        """The buffer as text: trace_pipe style, or the ``trace`` file with header."""
        out = []
        if header:
            out += ["# tracer: nop", "#",
                    f"# entries-in-buffer/entries-written: "
                    f"{self.entries_in_buffer}/{self.entries_written}   #P:{nr_cpus}",
                    "#", *_HELP_HEADER]
        out += self._lines
        return "".join(line + "\n" for line in out)
