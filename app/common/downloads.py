"""A run's downloads: its configuration (JSON, the stored shape) and its checkpoints (one ZIP)."""

import io
import json
import zipfile
from pathlib import Path

def run_config_json(run):
    """A run's configuration as a download: its id, status and label, the request as it was asked and
    every model's RunConfig, in the stored shape (request.Request.from_stored reads it back)."""
    stored = {"id": run["id"], "status": run["status"], "label": run["label"], **run["config"]}
    return json.dumps(stored, indent=2).encode()


def checkpoints_zip(paths):
    """The checkpoint files ({model: path}) in one ZIP, each under its file name. Stored, not
    compressed: a .pt file is a ZIP of tensors already."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for path in paths.values():
            archive.write(path, arcname=Path(path).name)
    return buffer.getvalue()


def run_downloads(run, paths, columns):
    """Download buttons for a run's configuration (JSON) and its checkpoints (ZIP), in two columns."""
    columns[0].download_button("Download configuration (JSON)", run_config_json(run), f"run{run['id']}-config.json",
                               "application/json", on_click="ignore", icon=":material/download:",
                               help="The request as asked and every model's settings (RunConfig).")
    columns[1].download_button(f"Download checkpoints ({len(paths)}, ZIP)", lambda: checkpoints_zip(paths),
                               f"run{run['id']}-checkpoints.zip", "application/zip", on_click="ignore",
                               icon=":material/download:", disabled=not paths,
                               help="The saved weights, one .pt per model: nanokimi.training.train.load_checkpoint reads one.")
