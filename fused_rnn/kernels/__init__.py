"""Triton kernels. Importing this package imports triton; fused_rnn.ops does so lazily."""
