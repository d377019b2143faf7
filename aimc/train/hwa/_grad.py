"""The gradients of one HWA product, shared by the Numba path (``layer._HWAMatmul``) and the torch backend
(``torch_backend``): only the transposed analog read differs between them."""
from __future__ import annotations


def hwa_backward(ctx, grad_y, transposed_read):
    """(grad_x, grad_w, grad_r, grad_s) of y = s * r_out * read(x; r) given the saved tensors of ``ctx``
    (x2d, weight, r, s, saved), ``ctx.r_out`` (a scalar factor or None), ``ctx.layer``, ``ctx.state`` (the
    HWALayer: clip info and the input-range gradient). ``transposed_read(d)`` is the analog backward read of
    the layer's tiles (a tensor), used unless the config asks for the ideal transposed product."""
    x2d, weight, r, s, saved = ctx.saved_tensors
    state, layer = ctx.state, ctx.layer
    grad_x = grad_w = grad_r = grad_s = None
    if s is not None and ctx.needs_input_grad[3]:
        grad_s = (grad_y * saved).sum(0)
        if ctx.r_out is not None:
            grad_s = grad_s * ctx.r_out
    sd = None if s is None else s.detach()
    need_r = r is not None and ctx.needs_input_grad[2]
    gxin = None
    if ctx.needs_input_grad[0] or need_r:
        if layer.config.backward_ideal:
            w = weight if sd is None else weight * sd[:, None]
            gxin = grad_y @ w.to(grad_y.dtype)
        else:
            gxin = transposed_read(grad_y if sd is None else grad_y * sd).to(grad_y.dtype)
        if ctx.needs_input_grad[0]:
            grad_x = gxin
    clip = state._clip_info(x2d.detach(), r.detach()) if r is not None else None
    if ctx.needs_input_grad[1]:
        xc = x2d if clip is None or clip[0] is None else clip[1]
        grad_w = grad_y.t() @ xc
        if sd is not None:
            grad_w = grad_w * sd[:, None]
    if need_r:
        grad_r = state._range_grad(x2d.detach(), gxin, r.detach(), clip)
    return grad_x, grad_w, grad_r, grad_s
