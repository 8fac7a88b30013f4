"""tf2onnx handlers that keep float64 graphs float64 and runnable by onnxruntime.

tf2onnx 1.17's own conversions break our models in three ways (measured, r17): it casts a double
``Log`` to float32 (its comment says onnxruntime has no double Log; 1.20+ has), it leaves
``Log1p``, ``Expm1`` and ``Erfc`` unconverted (one log line; the file does not load), and it turns
``Select`` into ``Cast(c)*x + Cast(!c)*y``, which gives NaN when the branch not taken is inf.
onnxruntime also has no double kernel for ``Elu``, ``Selu`` or ``Erf``, and its double
``Sigmoid`` flushes to 0 below -36.7 where TensorFlow's does not.

Each handler rewrites one *standard TensorFlow op* with ONNX ops that have double kernels, in the
form TensorFlow's own CPU kernel computes it (so most agree bit for bit); none knows about a
particular layer, so any layer built from these ops exports. Imported only with tf2onnx.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# W. J. Cody's rational Chebyshev approximation of erfc (netlib specfun CALERF), double.
_ERFC_A = (3.1611237438705656, 113.864154151050156, 377.485237685302021, 3209.37758913846947,
           0.185777706184603153)
_ERFC_B = (23.6012909523441209, 244.024637934444173, 1282.61652607737228, 2844.23683343917062)
_ERFC_C = (0.564188496988670089, 8.88314979438837594, 66.1191906371416295, 298.635138197400131,
           881.95222124176909, 1712.04761263407058, 2051.07837782607147, 1230.33935479799725,
           2.15311535474403846e-8)
_ERFC_D = (15.7449261107098347, 117.693950891312499, 537.181101862009858, 1621.38957456669019,
           3290.79923573345963, 4362.61909014324716, 3439.36767414372164, 1230.33935480374942)
_ERFC_P = (0.305326634961232344, 0.360344899949804439, 0.125781726111229246,
           0.0160837851487422766, 6.58749161529837803e-4, 0.0163153871373020978)
_ERFC_Q = (2.56852019228982242, 1.87295284992346047, 0.527905102951428412,
           0.0605183413124413191, 0.00233520497626869185)
_SQRT_PI_INVERSE, _ERFC_THRESHOLD, _ERFC_BIG = 0.56418958354775628695, 0.46875, 26.543

# TensorFlow's Selu kernel (relu_op_functor.h) multiplies by these literals.
_SELU_SCALE = 1.0507009873554804934193349852946
_SELU_SCALE_ALPHA = 1.7580993408473768599402175208123


class _Builder:
    """Adds ONNX nodes (of the replaced node's type) to a tf2onnx graph, then replaces the
    node with the last one."""

    def __init__(self, ctx: Any, node: Any) -> None:
        from onnx import TensorProto

        self.ctx = ctx
        self.node = node
        # Constants take the node's own type: double for float64 models (float32 ones stay so).
        double = ctx.get_dtype(node.output[0]) == TensorProto.DOUBLE
        self.dtype: type[np.floating[Any]]
        self.dtype = np.float64 if double else np.float32

    def const(self, value: float) -> str:
        from tf2onnx import utils

        name = utils.make_name("sweep_const")
        return str(self.ctx.make_const(name, np.array(value, dtype=self.dtype)).output[0])

    def op(self, op_type: str, *inputs: str) -> str:
        return str(self.ctx.make_node(op_type, list(inputs)).output[0])

    def finish(self, op_type: str, *inputs: str) -> None:
        """Write `op_type(inputs)` to the replaced node's own output, keeping its name."""
        out = self.node.output[0]
        shape, dtype = self.ctx.get_shape(out), self.ctx.get_dtype(out)
        self.ctx.remove_node(self.node.name)
        self.ctx.make_node(op_type, list(inputs), outputs=[out], shapes=[shape], dtypes=[dtype])

    def expm1(self, x: str) -> tuple[str, str, str]:
        """Kahan's expm1 (Eigen's generic_expm1) as (condition, x, rest) for a final Where."""
        one = self.const(1.0)
        u = self.op("Exp", x)
        u_minus_1 = self.op("Sub", u, one)
        general = self.op("Div", self.op("Mul", u_minus_1, x), self.op("Log", u))
        rest = self.op("Where", self.op("IsInf", u), u, general)
        minus_one = self.const(-1.0)
        rest = self.op("Where", self.op("Equal", u_minus_1, minus_one), minus_one, rest)
        return self.op("Equal", u, one), x, rest

    def exp_minus_one(self, x: str) -> str:
        """``exp(x) - 1``: what TensorFlow's Elu and Selu kernels compute (not expm1)."""
        return self.op("Sub", self.op("Exp", x), self.const(1.0))

    def scaled_exp(self, y: str, r: str) -> str:
        """Cody's ``exp(-y*y) * r`` without losing the low bits of y*y."""
        sixteen = self.const(16.0)
        s = self.op("Div", self.op("Floor", self.op("Mul", y, sixteen)), sixteen)
        dl = self.op("Mul", self.op("Sub", y, s), self.op("Add", y, s))
        head = self.op("Exp", self.op("Neg", self.op("Mul", s, s)))
        return self.op("Mul", self.op("Mul", head, self.op("Exp", self.op("Neg", dl))), r)

    def polynomial_ratio(
        self, v: str, num: tuple[float, ...], den: tuple[float, ...], degree: int
    ) -> tuple[str, str]:
        xnum = self.op("Mul", self.const(num[-1]), v)
        xden = v
        for i in range(degree):
            xnum = self.op("Mul", self.op("Add", xnum, self.const(num[i])), v)
            xden = self.op("Mul", self.op("Add", xden, self.const(den[i])), v)
        return xnum, xden


def _log(ctx: Any, node: Any, name: str, args: Any) -> None:
    _Builder(ctx, node).finish("Log", node.input[0])


def _log1p(ctx: Any, node: Any, name: str, args: Any) -> None:
    b = _Builder(ctx, node)
    x = node.input[0]
    one = b.const(1.0)
    u = b.op("Add", x, one)
    general = b.op("Mul", b.op("Log", u), b.op("Div", x, b.op("Sub", u, one)))
    general = b.op("Where", b.op("IsInf", u), u, general)
    b.finish("Where", b.op("Equal", u, one), x, general)


def _expm1(ctx: Any, node: Any, name: str, args: Any) -> None:
    b = _Builder(ctx, node)
    b.finish("Where", *b.expm1(node.input[0]))


def _elu(ctx: Any, node: Any, name: str, args: Any) -> None:
    b = _Builder(ctx, node)
    x = node.input[0]
    b.finish("Where", b.op("Less", x, b.const(0.0)), b.exp_minus_one(x), x)


def _selu(ctx: Any, node: Any, name: str, args: Any) -> None:
    b = _Builder(ctx, node)
    x = node.input[0]
    negative = b.op("Mul", b.const(_SELU_SCALE_ALPHA), b.exp_minus_one(x))
    positive = b.op("Mul", b.const(_SELU_SCALE), x)
    b.finish("Where", b.op("Less", x, b.const(0.0)), negative, positive)


def _sigmoid(ctx: Any, node: Any, name: str, args: Any) -> None:
    # Eigen's scalar_logistic_op: e = exp(x); inf -> 1, else e / (1 + e).
    b = _Builder(ctx, node)
    one = b.const(1.0)
    e = b.op("Exp", node.input[0])
    b.finish("Where", b.op("IsInf", e), one, b.op("Div", e, b.op("Add", one, e)))


def _erfc(ctx: Any, node: Any, name: str, args: Any) -> None:
    """Cody's erfc: every interval computed on a clamped argument, then selected."""
    b = _Builder(ctx, node)
    x = node.input[0]
    y = b.op("Abs", x)
    one = b.const(1.0)
    xnum, xden = b.polynomial_ratio(b.op("Mul", x, x), _ERFC_A, _ERFC_B, 3)
    near = b.op("Sub", one, b.op("Div", b.op("Mul", x, b.op("Add", xnum, b.const(_ERFC_A[3]))),
                                  b.op("Add", xden, b.const(_ERFC_B[3]))))
    four = b.const(4.0)
    y2 = b.op("Min", y, four)
    xnum, xden = b.polynomial_ratio(y2, _ERFC_C, _ERFC_D, 7)
    middle = b.scaled_exp(y2, b.op("Div", b.op("Add", xnum, b.const(_ERFC_C[7])),
                                   b.op("Add", xden, b.const(_ERFC_D[7]))))
    y3 = b.op("Min", b.op("Max", y, four), b.const(_ERFC_BIG))
    inverse_square = b.op("Div", one, b.op("Mul", y3, y3))
    xnum, xden = b.polynomial_ratio(inverse_square, _ERFC_P, _ERFC_Q, 4)
    tail = b.op("Div", b.op("Mul", inverse_square, b.op("Add", xnum, b.const(_ERFC_P[4]))),
                b.op("Add", xden, b.const(_ERFC_Q[4])))
    tail = b.scaled_exp(y3, b.op("Div", b.op("Sub", b.const(_SQRT_PI_INVERSE), tail), y3))
    tail = b.op("Where", b.op("GreaterOrEqual", y, b.const(_ERFC_BIG)), b.const(0.0), tail)
    far = b.op("Where", b.op("LessOrEqual", y, four), middle, tail)
    far = b.op("Where", b.op("Less", x, b.const(0.0)), b.op("Sub", b.const(2.0), far), far)
    b.finish("Where", b.op("LessOrEqual", y, b.const(_ERFC_THRESHOLD)), near, far)


def _select(ctx: Any, node: Any, name: str, args: Any) -> None:
    """A plain ONNX Where: never NaN from an inf in the branch that is not taken."""
    from tf2onnx import utils

    condition, true_value = node.input[0], node.input[1]
    condition_shape, value_shape = ctx.get_shape(condition), ctx.get_shape(true_value)
    if node.type == "Select" and condition_shape is not None and len(condition_shape) == 1 and (
        value_shape is not None and len(value_shape) != 1
    ):
        # TF's Select broadcasts a vector condition along the first axis; ONNX's along the last.
        shape = np.array([condition_shape[0]] + [1] * (len(value_shape) - 1), dtype=np.int64)
        reshaped = ctx.make_node(
            "Reshape", [condition, ctx.make_const(utils.make_name("shape"), shape).output[0]]
        )
        ctx.replace_input(node, condition, reshaped.output[0], 0)
    node.type = "Where"


HANDLERS: dict[str, tuple[Any, list[Any]]] = {
    "Log": (_log, []),
    "Log1p": (_log1p, []),
    "Expm1": (_expm1, []),
    "Elu": (_elu, []),
    "Selu": (_selu, []),
    "Sigmoid": (_sigmoid, []),
    "Erfc": (_erfc, []),
    "Select": (_select, []),
    "SelectV2": (_select, []),
}
