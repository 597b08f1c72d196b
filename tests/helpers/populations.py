"""Small hypothesis files that several test modules run end to end (seconds each)."""

# Two conditions × 3 seeds of an 8-unit MLP on digits: randomized labels lower train accuracy.
TINY_BETWEEN = """\
id: between_tiny
claim: Randomized labels lower training-label accuracy (a fast test population).
population:
  data: {kind: digits}
  model: {kind: mlp, hidden: [8]}
  training: {epochs: 2, batch_size: 128, lr: 0.01}
  seeds: 3
  conditions:
    training.label_noise: [0, 0.5]
test:
  kind: between_conditions
  outcome: {kind: accuracy, split: train}
  compare: {kind: reference, reference: {training.label_noise: 0}}
prediction:
  direction: negative
  sesoi: 0.02
"""
