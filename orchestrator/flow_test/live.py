"""``pipewell test`` on a terminal: the nodes live, each node's log, a file picker.

A textual app: a table of the nodes (state, attempt, elapsed, last line; a mapped
node's row shows a bar of its items and ``312/5000 items (3 failed)`` instead), the
log of the node under the cursor below it (a mapped node's failed items under it
once the run has ended), and for each input the command line did not give, a
picker (a path field and the directory tree) whose file is uploaded to the
input's WaitingURL (a collection edge takes a zip, a tar or a folder). It stays
open once the run has ended, with the outputs downloaded, until ``q``.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, DirectoryTree, Footer, Header, Input, Label, RichLog, Static

from orchestrator.client import item_progress_text, progress_bar
from orchestrator.flow_test.session import (
    CannotTest,
    NodeView,
    Output,
    RunSession,
    Update,
    check_collection_input,
)

STATE_STYLES = {
    "IDLE": "dim",
    "READY": "cyan",
    "RUNNING": "bold yellow",
    "RETRYING": "bold magenta",
    "COMPLETE": "bold green",
    "ERROR": "bold red",
    "STOPPED": "bold blue",
}
COLUMNS = ("node", "state", "attempt", "elapsed", "last line")
#: Cells of a mapped node's bar of items.
BAR = 16


def item_cell(view: NodeView) -> Text:
    """A mapped node's items: a bar (green: succeeded, red: failed, dim: to do) and
    ``312/5000 items (3 failed)``, then its error once it has failed."""
    assert view.items is not None
    ok, bad = progress_bar(view.items, BAR)
    cell = Text.assemble(
        ("█" * ok, "green"),
        ("█" * bad, "red"),
        ("░" * (BAR - ok - bad), "dim"),
        f" {item_progress_text(view.items)}",
        no_wrap=True,
        overflow="ellipsis",
    )
    if view.status in ("ERROR", "STOPPED") and view.error:
        cell.append(f"  {view.error}", style="red")
    return cell


class FilePicker(ModalScreen[Path | None]):
    """Choose the file for one waiting edge: type a path, or pick one in the tree. A
    collection edge takes a zip or a tar, or a folder (typed, or chosen in the tree and
    confirmed with Enter): its files are put as the collection's items."""

    BINDINGS = [Binding("escape", "give_up", "Stop the run")]
    DEFAULT_CSS = """
    FilePicker { align: center middle; }
    FilePicker > Vertical { width: 90%; height: 80%; border: thick $accent; padding: 1 2;
                            background: $surface; }
    FilePicker DirectoryTree { height: 1fr; }
    """

    def __init__(self, edge: str, collection: bool = False) -> None:
        super().__init__()
        self.edge = edge
        self.collection = collection

    def compose(self) -> ComposeResult:
        with Vertical():
            if self.collection:
                asked = f"The run waits for the items of collection '{self.edge}'"
                hint = (
                    "A zip or tar of them, or a folder of them. Enter: upload the path typed "
                    "(a folder chosen below fills it in)   Esc: stop the run"
                )
                placeholder = "a folder, a zip or a tar, then Enter (or pick below)"
            else:
                asked = f"The run waits for a file on edge '{self.edge}'"
                hint = "Enter or click: upload this file   Esc: stop the run"
                placeholder = "a path, then Enter (or pick below)"
            yield Label(Text(asked, style="bold"))
            yield Input(placeholder=placeholder, id="path")
            yield DirectoryTree(Path.cwd())
            yield Label(hint, classes="hint")

    @on(Input.Submitted, "#path")
    def typed(self, event: Input.Submitted) -> None:
        self._choose(Path(event.value.strip()).expanduser())

    @on(DirectoryTree.FileSelected)
    def picked(self, event: DirectoryTree.FileSelected) -> None:
        self._choose(event.path)

    @on(DirectoryTree.DirectorySelected)
    def folder_picked(self, event: DirectoryTree.DirectorySelected) -> None:
        if self.collection:  # a folder is an answer too: said in the field, for Enter
            field = self.query_one("#path", Input)
            field.value = str(event.path)
            field.focus()

    def _choose(self, path: Path) -> None:
        if not self.collection:
            if path.is_file():
                self.dismiss(path)
            else:
                self.notify(f"{path} is not a file", severity="error")
            return
        if not path.is_file() and not path.is_dir():
            self.notify(f"{path} is not there", severity="error")
            return
        try:
            check_collection_input(self.edge, path)
        except CannotTest as exc:
            self.notify(str(exc), severity="error")
            return
        self.dismiss(path)

    def action_give_up(self) -> None:
        self.dismiss(None)


class ConfirmStop(ModalScreen[bool]):
    """Stopping a run cannot be undone: y stops it, n or Esc goes back."""

    BINDINGS = [
        Binding("y", "answer(True)", "Stop it"),
        Binding("n,escape", "answer(False)", "Keep it running"),
    ]
    DEFAULT_CSS = """
    ConfirmStop { align: center middle; }
    ConfirmStop > Vertical { width: 60; height: auto; border: thick $error; padding: 1 2;
                             background: $surface; }
    """

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(Text(self.question, style="bold"))
            yield Label("Nodes at work are stopped and the run ends STOPPED.")
            yield Label("y: stop it   n or Esc: keep it running", classes="hint")

    def action_answer(self, stop: bool) -> None:
        self.dismiss(stop)


class LiveView(App[list[Output] | None]):
    """Runs the session to its end; returns the downloaded outputs (None unless COMPLETE)."""

    TITLE = "pipewell test"
    BINDINGS = [
        Binding("q", "leave", "Quit (stops a run not yet ended)"),
        Binding("c", "cancel_run", "Cancel the run"),
    ]
    CSS = """
    #summary { height: auto; padding: 0 1; }
    #nodes { height: auto; max-height: 45%; }
    #log { height: 1fr; border: round $accent; }
    """

    def __init__(self, session: RunSession, files: dict[str, Path], out: Path) -> None:
        super().__init__()
        self.session = session
        self.files = files
        self.out = out
        self.outputs: list[Output] | None = None
        self.selected = next(iter(session.nodes))
        self._written = 0
        self._note = "starting"

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="summary")
        yield DataTable(id="nodes", cursor_type="row", zebra_stripes=True)
        yield RichLog(id="log", wrap=True, markup=False, highlight=False, max_lines=5000)
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = f"{self.session.submission.flow.name} · run {self.session.run_id}"
        table = self.query_one("#nodes", DataTable)
        # Widths fixed up front: a column sized by its first cells would cut "RUNNING".
        widths = {"node": max(4, *map(len, self.session.nodes)), "state": 8, "last line": 64}
        for column in COLUMNS:
            table.add_column(column, key=column, width=widths.get(column, 8))
        for node_id, view in self.session.nodes.items():
            table.add_row(*self._cells(node_id, view), key=node_id)
        self._show_log(self.selected)
        self.set_interval(0.5, self._tick)
        self.run_worker(self._drive(), name="run", exit_on_error=False)

    async def _drive(self) -> None:
        try:
            await self._upload_inputs()
            if self.session.run is not None and not self.session.run.status.finished:
                self._note = "running"
                async for update in self.session.follow():
                    self._apply(update)
            if await self.session.failed_items():
                self._show_log(self.selected)  # a mapped node's failed items, under its log
            if self.session.status.value == "COMPLETE":
                self._note = f"downloading outputs into {self.out}"
                self._tick()
                self.outputs = await self.session.download(self.out)
            self._note = self._ended()
        except CannotTest as exc:
            await self.session.cancel()
            self._note = f"stopped: {exc}"
        self._tick()

    async def _upload_inputs(self) -> None:
        for edge in self.session.waiting_edges():
            collection = edge in self.session.collections
            path = self.files.get(edge)
            if path is None:
                self._note = f"waiting for a file on edge '{edge}'"
                self._tick()
                path = await self.push_screen_wait(FilePicker(edge, collection))
                if path is None:
                    raise CannotTest(f"no file chosen for edge {edge!r}")
            if collection and path.is_dir():
                self._note = f"uploading the files of {path.name}/ to edge '{edge}'"
                self._tick()

                def said(put: int, of: int, edge: str = edge, name: str = path.name) -> None:
                    self._note = f"uploading the files of {name}/ to edge '{edge}': {put}/{of}"
                    self._tick()

                await self.session.upload_items(edge, path, said)
                continue
            self._note = f"uploading {path.name} to edge '{edge}'"
            self._tick()
            await self.session.upload(edge, path)

    def _apply(self, update: Update) -> None:
        table = self.query_one("#nodes", DataTable)
        nodes = [update.node] if update.kind == "log" else list(self.session.nodes)
        for node_id in nodes:
            if node_id is None or node_id not in self.session.nodes:
                continue
            for column, cell in zip(
                COLUMNS, self._cells(node_id, self.session.nodes[node_id]), strict=True
            ):
                table.update_cell(node_id, column, cell)
        self._show_new_lines()
        self._tick()

    def _cells(self, node_id: str, view: NodeView) -> tuple[Text | str, ...]:
        state = Text(view.status, style=STATE_STYLES.get(view.status, ""))
        if view.items is not None:  # a mapped node: its items, not its attempts
            started = view.status != "IDLE"
            elapsed = f"{view.elapsed():.1f} s" if started else ""
            return (Text(node_id), state, "items", elapsed, item_cell(view))
        attempt = f"{view.attempt}/{view.max_attempts}" if view.attempt else "-"
        elapsed = f"{view.elapsed():.1f} s" if view.attempt else ""
        shows_error = view.status in ("ERROR", "STOPPED") and view.error
        last = view.error if shows_error else view.last_line()
        return (
            Text(node_id),
            state,
            attempt,
            elapsed,
            Text(last, no_wrap=True, overflow="ellipsis"),
        )

    def _tick(self) -> None:
        table = self.query_one("#nodes", DataTable)
        for node_id, view in self.session.nodes.items():
            if view.running_since is not None:
                table.update_cell(node_id, "elapsed", f"{view.elapsed():.1f} s")
        run = self.session.run
        status = run.status.value if run else "SUBMITTED"
        line = Text.assemble(
            ("run ", ""),
            (status, STATE_STYLES.get(status, "bold")),
            (f"  {self.session.elapsed():.1f} s  ·  {self._note}", ""),
        )
        self.query_one("#summary", Static).update(line)

    def _ended(self) -> str:
        failed = sum(len(f.items) for f in (self.session.failed or {}).values())
        items = f"  ·  failed items in the log of {', '.join(self.session.failed or {})}"
        if self.outputs is not None:
            where = ", ".join(
                f"{o.edge} -> {o.path}{'' if o.items is None else '/'}" for o in self.outputs
            )
            where = where or "no outputs"
            return f"done: {where}{items if failed else ''}  ·  q: quit"
        failed = [n for n, v in self.session.nodes.items() if v.status == "ERROR"]
        if failed:
            return f"node {', '.join(failed)} failed  ·  its log is below  ·  q: quit"
        if self.session.run is not None and self.session.run.status.value == "STOPPED":
            return "stopped on request  ·  q: quit"
        return "ended  ·  q: quit"

    @on(DataTable.RowHighlighted, "#nodes")
    def node_chosen(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is not None:
            self._show_log(event.row_key.value)

    def _show_log(self, node_id: str) -> None:
        self.selected = node_id
        pane = self.query_one("#log", RichLog)
        pane.border_title = f"log of {node_id}  (↑↓: another node)"
        pane.clear()
        self._written = 0
        self._show_new_lines()

    def _show_new_lines(self) -> None:
        pane = self.query_one("#log", RichLog)
        records = self.session.nodes[self.selected].logs
        failed = (self.session.failed or {}).get(self.selected)
        if self._written > len(records):
            return  # the failed items are written already, after every line
        for record in records[self._written :]:
            when = record.timestamp.strftime("%H:%M:%S")
            style = (
                "red" if record.stream == "stderr" else "dim" if record.stream == "pipewell" else ""
            )
            # Log text is the container's: shown as text, never read as markup.
            pane.write(
                Text.assemble((f"{when} {record.stream:<8} ", "dim"), (record.message, style))
            )
        self._written = len(records)
        lines = self.session.failed_item_lines(self.selected) if failed is not None else []
        if lines:
            # Once the run has ended: a mapped node's failed items, with their reasons.
            head, *items, hint = lines
            pane.write(Text(head.strip(), style="bold red"))
            for line in items:
                pane.write(Text(line.strip(), style="red"))
            pane.write(Text(hint.strip(), style="dim"))
            self._written = len(records) + 1

    def _run_goes_on(self) -> bool:
        return self.session.run is not None and not self.session.run.status.finished

    def action_cancel_run(self) -> None:
        if self._run_goes_on():
            self.run_worker(self._confirm_then_stop(leave=False), name="cancel")

    def action_leave(self) -> None:
        if self._run_goes_on():
            self.run_worker(self._confirm_then_stop(leave=True), name="leave")
        else:
            self.exit(self.outputs)

    async def _confirm_then_stop(self, *, leave: bool) -> None:
        question = "Quit and stop this run?" if leave else "Stop this run?"
        if not await self.push_screen_wait(ConfirmStop(question)):
            return
        if self._run_goes_on():
            self._note = "stopping"
            self._tick()
            await self.session.cancel()
        if leave:
            self.exit(self.outputs)


__all__ = ["LiveView"]
