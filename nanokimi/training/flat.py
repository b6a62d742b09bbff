"""Parameters laid out side by side in one contiguous buffer, for optimizers that step them as one.

At nanokimi's size an optimizer step is dozens of small tensors, and the per-tensor cost (a
Python loop, a kernel launch per parameter and operation) outweighs the arithmetic. `FlatLayout`
moves a list of parameters into one flat buffer: each Parameter stays the same object, only its
storage becomes a view of the buffer (`p.data = buffer[start:end].view_as(p)`), so the model, its
state_dict and autograd see nothing different, while an optimizer reads and writes every
parameter at once. Per-parameter optimizer state can live in a buffer of the same layout
(`place`).

Two optimizers use it (optimizers.py): TrueMuon (ordered by matrix shape, so each shape's
matrices are one batch for Newton–Schulz; with a momentum buffer) and FlatAdamW (one fused AdamW
kernel on the whole buffer). Measured here on the seed models, one thread: TrueMuon 11.6 -> 10.2 ms
per NanoKimi step (Newton–Schulz itself is 9.6), AdamW 1.4 -> 0.8 ms per NanoGPT step.

Anything may break the layout (a re-assigned `p.data`, a loaded optimizer state_dict), so users
check it at each step by data pointer: comparing integers costs ~0.01 ms a step where making a
view per parameter to compare cost 0.23 ms.
"""

import torch


class FlatLayout:
    """`params` (one dtype, one device) moved, in the given order, into one flat buffer `data`.

    `gather_grads()` copies their gradients into the matching flat buffer `grad`; `place` puts
    other per-parameter tensors (optimizer state) into a buffer of the same layout. `data` may be
    given (a flat tensor, e.g. an nn.Parameter an optimizer steps): the parameters' values are
    then copied into it.
    """

    def __init__(self, params, data=None):
        self.params = list(params)
        if not self.params:
            raise ValueError("a flat layout needs at least one parameter")
        if len({(p.dtype, p.device) for p in self.params}) > 1:
            raise ValueError("a flat layout needs parameters of one dtype on one device")
        self.slices = []
        offset = 0
        for p in self.params:
            self.slices.append(slice(offset, offset + p.numel()))
            offset += p.numel()
        like = self.params[0]
        self.data = torch.empty(offset, dtype=like.dtype, device=like.device) if data is None else data
        if self.data.shape != (offset,):
            raise ValueError(f"a flat buffer for these parameters holds {offset} elements, got shape {tuple(self.data.shape)}")
        self.grad = torch.empty_like(self.data, requires_grad=False)
        self._offsets = [part.start * self.data.element_size() for part in self.slices]  # in bytes
        self.link()

    def view(self, buffer, i):
        """Parameter i's place in `buffer` (a flat tensor of this layout), shaped like the parameter."""
        return buffer.detach()[self.slices[i]].view_as(self.params[i])

    def holds(self, tensors, buffer):
        """Is each of `tensors` (one per parameter) still the view of its place in `buffer`?"""
        base = buffer.data_ptr()
        return all(t is not None and t.data_ptr() == base + offset for t, offset in zip(tensors, self._offsets))

    def intact(self):
        """Does every parameter still live in the buffer?"""
        return self.holds(self.params, self.data)

    @torch.no_grad()
    def place(self, tensors, buffer):
        """Copy each of `tensors` (one per parameter; None: leave its place as it is) that is not
        already there into its place in `buffer`; returns the views, one per parameter."""
        views = []
        base = buffer.data_ptr()
        for i, (tensor, offset) in enumerate(zip(tensors, self._offsets)):
            view = tensor
            if tensor is None or tensor.data_ptr() != base + offset:  # checked without making a view
                view = self.view(buffer, i)
                if tensor is not None:
                    view.copy_(tensor.detach())
            views.append(view)
        return views

    def link(self):
        """Make every parameter a view of the buffer again, copying in the values of any whose
        storage was replaced (`p.data = ...`) since."""
        for p, view in zip(self.params, self.place(self.params, self.data)):
            if view is not p:
                p.data = view  # the same Parameter, its storage in the buffer

    def gather_grads(self):
        """Every parameter's gradient (all must have one) copied into the flat `grad`; returns it."""
        torch.cat([p.grad.reshape(-1) for p in self.params], out=self.grad)
        return self.grad
