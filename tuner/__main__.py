"""`python -m tuner` is the `rnn-tuner` command."""

from tuner.cli import main

main()
