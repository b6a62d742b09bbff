"""What the pages share, and what a page keeps out of its script, one job per module (not pages):

- jobqueue: the server's job queue (run store + runner handle), one per data directory
- datasets: the Dataset menu and the text each choice trains on
- controls: the model and training controls, and a page's state in its URL
- request: the controls turned into a request, or the reasons it can't train (the app's hints)
- estimate: before Train, the models' sizes and a run's duration measured on this machine
- live: Train and Stop, the live area and view, how a finished run ended
- effects: the Ablation page's effects as a person reads them (names, sentences, table)
- pickers: the run and model pickers and the names they give
- downloads: a run's configuration and checkpoints as files
- checkpoints: a run's saved models, loaded and kept
- chart_display: a chart with its image downloads
"""
