"""Altair chart builders, shared by the app's pages and the CLI's images (comparison_graph.png,
ablation.png, sweep.png); one module per purpose:

- style: the Okabe–Ito palette, each model's colour and each optimizer's dash, legends, zoom
- smoothing: TensorBoard's debiased EMA and thinning long series
- comparison: the Compare page's charts and comparison_graph.png
- ablation: the Ablation page's charts (arms, effects, learning-rate sweep) and ablation.png
- analysis: the Experts and Optimizer lab pages' charts
- runs: the Runs page's group bands
- images: a chart as PNG or SVG bytes

Design choices, each one a reader's habit from TensorBoard or W&B:
- Smoothing is TensorBoard's debiased exponential moving average (`ema`), per series, in step
  units, drawn over the faint raw series; it only touches metrics recorded at every step
  (`EVERY_STEP`): evaluation points (validation loss, memory, routing) are drawn as they are.
- Every model and arm has one colour on every page (`series_color`, from the Okabe–Ito
  colour-blind-safe palette); an arm's optimizer is its dash (`series_dash`). Model colours mean
  models only: parts, conditions and layers get greys or a sequential scheme.
- Bars and areas that compare sizes start at zero; line charts zoom and pan along x (drag,
  scroll) and their legend entries fade or bring back a series when clicked.
- `chart_image` renders any chart to PNG or SVG bytes with vl-convert (no browser).
"""
