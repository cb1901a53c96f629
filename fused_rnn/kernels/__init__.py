"""Triton kernels. Importing one of these modules imports triton; fused_rnn.backends.triton imports them lazily."""
