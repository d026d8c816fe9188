"""The Triton kernel (`kernel`, its program in `program`) and the fix of Triton's CPU
interpreter the suite needs for bf16 (`interpret`)."""
