"""Property 5: batch and token independence. A token's output depends only on its own
query and index row, its batch's `seqused_kv` and block tables, and the rows it addresses:
replacing every other batch and every other token's inputs changes nothing for it."""

from hypothesis import given
from hypothesis import strategies as st

from sparse_attn_conformance.conformance.draw import draw_case
from sparse_attn_conformance.conformance.harness import call_many, example, expect_equal_rows
from sparse_attn_conformance.conformance.v1.views import batch_view, mix, one_token_call
from sparse_attn_conformance.contracts import formats


@given(data=st.data())
def test_other_batches_and_tokens_do_not_matter(kernel, data):
    # case B is drawn at case A's config without being an edge case itself: an edge
    # config's long pages at a large D (an FP8 format's 512 or 576, or declared) would make
    # B a full pool of gigabytes, so A is no edge case there
    large = any(formats.key_dims(f) for f in kernel.kv_formats) \
        or max(kernel.pre.dims.get("D", (0,))) > 64
    a = draw_case(data, kernel, label="case A", edge=None if large else "drawn")
    b = draw_case(data, kernel, label="case B", config=a.config, kv_format=a.kv_format)
    with example(a, kernel):
        batch = data.draw(st.integers(0, a.config.B - 1), label="batch")
        token = data.draw(st.integers(0, a.config.S - 1), label="token")
        # B's attn_sink is replaced by A's: the sink is shared by every token
        b_inputs = b.inputs.replace(attn_sink=a.inputs.attn_sink)
        mixed = mix(a.inputs, b_inputs, batch, token, rows_too=not kernel.pre.canonical_rows)
        out_mixed, out_a, out_b = call_many(kernel, [mixed, a.inputs, b_inputs])
        one = (slice(batch, batch + 1), slice(token, token + 1))
        expect_equal_rows(out_mixed[one], out_a[one],
                          batch_view(one_token_call(a.inputs, token), [batch]),
                          what=f"token (b={batch}, s={token}) with every other input replaced",
                          against="the same token in its own call")
        others = [i for i in range(a.config.B) if i != batch]
        if others:
            expect_equal_rows(out_mixed[others], out_b[others], batch_view(b_inputs, others),
                              what=f"batches {others} beside a different batch {batch}",
                              against="the same batches in their own call")
