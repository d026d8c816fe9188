"""The kernels written in torch alone: the reference (`reference`), a tiled online-softmax
kernel (`tiled`, `tiled_v2`) and the positional one (`positional`). They run on any machine
and are the controls of every kill-rate run."""
