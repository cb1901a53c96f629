"""The stock model the benchmarks time: the seed notebook's class as written.

A copy of tests/seed_model.py (from ../shared/seed/000_*.txt), so that the
benchmarks import nothing from tests/.
"""

import torch
import torch.nn as nn


class SimpleRNN(nn.Module):
    def __init__(self, input_size, hidden_size, output_size):
        super(SimpleRNN, self).__init__()

        self.hidden_size = hidden_size
        self.rnn = nn.RNN(input_size, hidden_size, num_layers=1, batch_first=True)
        self.fc = nn.Linear(hidden_size, output_size)

    def forward(self, x):
        # Initialize hidden state
        h0 = torch.zeros(1, x.size(0), self.hidden_size).to(x.device)

        # Pass the input through the RNN layer
        out, _ = self.rnn(x, h0)

        # Pass the output of the last time step through the fully connected layer
        out = self.fc(out[:, -1, :])

        return out


class SimpleRNNAnyDtype(SimpleRNN):
    """The seed model with h0 cast to x's dtype, so that it runs in bfloat16.

    As written, the seed makes h0 in float32 (``.to(x.device)``), which nn.RNN
    with bfloat16 weights rejects; ``.to(x)`` is the smallest change (h0 is
    still made on the CPU and copied, as in the seed). Autocast is no way
    round it: cuDNN's RNN under autocast always runs in float16
    (aten/src/ATen/cudnn/AutocastRNN.cpp), so a bf16 row would time an fp16 kernel.
    """

    def forward(self, x):
        h0 = torch.zeros(1, x.size(0), self.hidden_size).to(x)
        out, _ = self.rnn(x, h0)
        return self.fc(out[:, -1, :])


class GeneralizedRNN(nn.Module):
    """The seed generalized as public code writes it: any cell, stacked, bidirectional, h0 left to the RNN.

    ``self.rnn = nn.RNN/GRU/LSTM(..., batch_first=True)`` then ``self.fc(out[:, -1])``,
    with fc taking hidden_size × directions: the stock side of the FAMILY benchmark cases.
    """

    CELLS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}

    def __init__(self, input_size, hidden_size, output_size, cell="rnn", num_layers=1, bidirectional=False):
        super().__init__()
        self.rnn = self.CELLS[cell](input_size, hidden_size, num_layers=num_layers, batch_first=True,
                                    bidirectional=bidirectional)
        self.fc = nn.Linear(hidden_size * (2 if bidirectional else 1), output_size)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.fc(out[:, -1, :])
