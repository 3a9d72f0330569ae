"""Decoded clips to the backbones' device: through pinned host buffers on a copy stream (CUDA), or as they are.

From pageable memory a host-to-device copy is synchronous and goes through a driver bounce buffer; from pinned
memory on a stream of its own it runs beside the compute stream's kernels. So `HostToDevice.send` copies a
tensor into the next of a ring of reusable pinned buffers, starts the device copy on the copy stream, and makes
the compute stream wait for that copy only (an event): the pipeline sends clip i+1 while clip i's views and
backbone kernels are still queued. A pinned buffer is reused only after its last copy finished (its event).
On a CPU device nothing moves.
"""

from __future__ import annotations

import torch

__all__ = ["HostToDevice"]


class HostToDevice:
    """Sends host tensors to `device`, `slots` copies in flight at most (CUDA); on a CPU device, a no-op.

    Args:
        device: the backbones' device.
        slots: pinned buffers in the ring: the clips whose copies may be in flight at once.
    """

    def __init__(self, device: torch.device, slots: int) -> None:
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        self.device = device
        self.bytes_sent = 0  # bytes copied to the device so far (0 on a CPU device)
        self._cuda = device.type == "cuda"
        self._stream = torch.cuda.Stream(device) if self._cuda else None
        self._buffers: list[torch.Tensor | None] = [None] * slots  # flat uint8 pinned buffers, grown on demand
        self._copied: list[torch.cuda.Event | None] = [None] * slots  # each buffer's last copy
        self._next = 0

    def send(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` on the device; work queued on the current stream from now on sees it copied."""
        if not self._cuda:
            return tensor
        slot = self._next
        self._next = (slot + 1) % len(self._buffers)
        if self._copied[slot] is not None:
            self._copied[slot].synchronize()  # the buffer's previous copy has left it
        nbytes = tensor.numel() * tensor.element_size()
        buffer = self._buffers[slot]
        if buffer is None or buffer.numel() < nbytes:
            buffer = self._buffers[slot] = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
        host = buffer[:nbytes].view(tensor.dtype).view(tensor.shape)
        host.copy_(tensor)
        compute = torch.cuda.current_stream(self.device)
        with torch.cuda.stream(self._stream):
            # Allocated on the copy stream; record_stream keeps its memory from reuse until compute is done with it.
            on_device = host.to(self.device, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record(self._stream)
        compute.wait_event(copied)
        on_device.record_stream(compute)
        self._copied[slot] = copied
        self.bytes_sent += nbytes
        return on_device
