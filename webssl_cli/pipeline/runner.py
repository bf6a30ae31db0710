"""One rank of `webssl extract`: claim units, stream them through the model, commit them.

Stages: ``loader`` (read + decode in DataLoader workers) -> ``model_step`` (pure) ->
``store`` (write on a background thread, done-record last). Units are claimed dynamically
(``store.ClaimStore``) so fast ranks take more; the done-record is the only authority on
completion, so a rerun skips done units and redoes the rest.
"""
from __future__ import annotations

import time

import torch

from ..config import ExtractConfig
from ..distributed import RankInfo, detect_rank
from ..distributed.signals import StopFlag, preemption_handlers
from ..errors import EXIT_INCOMPLETE, EXIT_OK, EXIT_PREEMPTED, Preempted, UsageError
from ..model_step import NONFINITE, nonfinite_rows, pick_precision
from ..store.unit_failures import (failed_in_job, failed_in_job_now, list_unit_failures,
                                   record_unit_failure)
from .assembler import BatchAssembler, Segment, split_rows
from .completion import check_damage, limit_note, plan_only
from .decode_share import ShareEstimate
from .device_decode import DeviceDecoder
from .heartbeat import Heartbeat
from .held_memory import HeldFeatures, available_memory
from .host_copy import HostCopy
from .loader import Batch, BatchSource
from .model_setup import build_step, check_attention, rank_device, settle_batch_size
from .nonfinite import split_nonfinite
from .others import OthersWait, not_done_message, open_units, units, waiting_message
from .progress import Counters, Progress, log, summary
from .result import RunResult
from .setup import Prepared, prepare
from .shared_memory import LOST_PIECES, loader_prefetch, piece_bytes, stall_hint
from .spill import Spiller, spill_budget
from .unit_state import UnitState
from .unit_writer import UnitWriter
from .write_queue import WriteQueue


DECODE_AHEAD = 2      # --decode gpu: raw batches queued for decoding before the main loop waits
WRITE_AHEAD = 2       # finished units (features in memory) queued behind the one being written
STOP_WRITE_GRACE = 10.0  # seconds a stop signal leaves the queued unit writes to finish
WRITE_BYTES_SHARE = 4 # past WRITE_AHEAD, finished units queue for the writer while their features
                      # hold under 1/4 of the spill budget (which bounds the units in flight)
WAIT_SLICE = 0.5      # seconds per wait for the loader: progress and stop checks in between
CLAIM_VIEW_S = 2.0    # seconds a listing of the done/given-up units serves claims
FLUSH_AFTER = 1.5     # seconds of stalled input before the rows read so far run as a partial
                      # batch, so that the units they finish are committed during the stall
SHM_HINT_AFTER = 10.0 # seconds of stalled input before /dev/shm is looked at (once)


def run_extract(cfg: ExtractConfig, rank: RankInfo | None = None) -> RunResult:
    """Run this process's share of an extraction; returns a RunResult with the exit code."""
    rank = rank or detect_rank()
    device = rank_device(cfg.model.device, rank)
    decode = cfg.runtime.decode
    if decode not in ("cpu", "gpu"):
        raise UsageError(f"--decode must be cpu or gpu, got {decode!r}")
    if decode == "gpu" and device.type != "cuda":
        raise UsageError("--decode gpu needs a CUDA device (--device cuda); use --decode cpu")
    precision = pick_precision(cfg.model.precision, device)
    check_attention(cfg, device, precision)
    flag = StopFlag()
    with preemption_handlers(flag, rank.prefix):
        flag.interruptible = True        # setup holds no claim: a signal may stop it anywhere
        try:
            prep = prepare(cfg, rank, precision)
            return RankRun(prep, rank, device, precision).run(flag)
        except Preempted as exc:   # outside the main loop's own handling (setup, plan only)
            log(rank, str(exc))
            return RunResult(EXIT_PREEMPTED, 0, 0, summary=str(exc))


class RankRun:
    def __init__(self, prep: Prepared, rank: RankInfo, device: torch.device, precision: str):
        from ..store import ClaimStore, done_units
        self.prep, self.rank, self.device, self.precision = prep, rank, device, precision
        self.rt = prep.cfg.runtime
        self.claims = ClaimStore(prep.layout, rank.owner, prep.cfg.runtime.lease_seconds)
        self.done_units = done_units
        self.counters = Counters()
        self.inflight: dict[int, UnitState] = {}
        self.failed: list[str] = []
        self.skip: set[str] = set()      # units this rank failed or lost: not claimed again
        available = available_memory()
        self.held = HeldFeatures(available, lambda msg: log(self.rank, msg))
        self.spiller = Spiller(prep.layout, self.held,
                               spill_budget(self.rt.feature_memory_mib, available),
                               lambda: self.flag.waiting())
        self.writes = WriteQueue(WRITE_AHEAD, allowance=self.spiller.budget // WRITE_BYTES_SHARE)
        self.writer = UnitWriter(prep, rank, self.counters, self.held, self.release)
        self.nonfinite_said = False
        self.piece_bytes = 0             # a worker's piece in /dev/shm (fit_prefetch)
        self.shm_said = False
        self.no_more = False
        self.units_claimed = 0
        self.claim_cursor = 0            # plan position after this rank's last claim
        self.view: set[str] = set()      # not_to_claim's last listing of the folder
        self.view_at = -CLAIM_VIEW_S
        self.others = OthersWait()
        self.started_at = time.time()    # without a job id: failures since then are this job's
        self.heartbeat = Heartbeat(self.claims, self.rt.heartbeat)
        self.decoder: DeviceDecoder | None = None
        self.share: ShareEstimate | None = None     # --decode gpu: the workers' CPU share
        self.flag = StopFlag()

    # -- claiming ----------------------------------------------------------------------
    def claim_more(self, source: BatchSource, flag: StopFlag) -> None:
        target = max(2, source.num_workers + 1)
        limit = self.rt.limit_units
        while not self.no_more and not flag and source.outstanding < target:
            if limit is not None and self.units_claimed >= limit:
                self.no_more = True
                break
            unit = self.claims.claim_next(self.prep.units, self.not_to_claim(),
                                          self.claim_cursor)
            if unit is None:
                self.no_more = True
                break
            self.claim_cursor = unit.index + 1
            if failed_in_job_now(self.prep.layout, unit.id, self.rank.job, self.started_at):
                # given up by another rank of this job and released meanwhile
                self.claims.release(unit.id)
                self.skip.add(unit.id)
                continue
            self.units_claimed += 1
            with self.heartbeat.lock:
                self.heartbeat.units.add(unit.id)
            n = source.submit(unit)
            self.inflight[unit.index] = UnitState(unit, parts_left=n)

    def not_to_claim(self) -> set[str]:
        """Units done (by any rank), given up in this job or skipped here. Listing the
        folder for that costs O(units); it is redone at most every CLAIM_VIEW_S seconds (a
        unit done elsewhere meanwhile is caught by claim_next's own check of that unit, one
        given up elsewhere by failed_in_job_now), or a run of 40,000 units spent more on
        claiming than on its images (0.3 s per claim, measured)."""
        now = time.monotonic()
        if now - self.view_at >= CLAIM_VIEW_S:
            self.view = set(self.done_units(self.prep.layout)) | self.failed_elsewhere()
            self.view_at = now
        return self.view | self.skip

    def wait_for_others(self, source: BatchSource, flag: StopFlag, progress: Progress) -> bool:
        """Nothing was left to claim. While units are open that other ranks hold, wait for
        them (pipeline/others.py); True once one was claimed here, False when none is open.
        This rank's own units still being written are committed first (writes.drain), so they
        are never waited for, polled for or reported as other ranks' units."""
        if self.rt.limit_units is not None and self.units_claimed >= self.rt.limit_units:
            return False
        self.writes.drain(flag.waiting)
        while True:
            held = set(self.claims.held)    # before done: a unit leaves it once it is done
            done = set(self.done_units(self.prep.layout))
            elsewhere = self.failed_elsewhere()
            left = open_units(self.prep.units, done, self.skip | elsewhere | held)
            if not left:
                self.say_failed_in_job(elsewhere - done)
                return False
            self.no_more = False
            self.claim_more(source, flag)
            if source.outstanding > 0:
                return True
            if self.others.should_say(len(left)):
                log(self.rank, waiting_message(left, self.claims.active_claims(),
                                               self.claims.lease_seconds))
            t0 = time.perf_counter()
            with flag.waiting():
                time.sleep(self.others.next_poll())
            self.others.seconds += time.perf_counter() - t0
            self.counters.others_wait_seconds = self.others.seconds
            progress.update(self.counters)

    def say_failed_in_job(self, failed: set[str]) -> None:
        """Units other ranks of this launcher job gave up: those ranks exit 3 and the job
        with them. A lone process has no such ranks: check_complete reports them."""
        if failed and self.rank.job:
            out = self.prep.layout.out_dir
            log(self.rank, f"{units(len(failed))} failed on other ranks of this job (they exit "
                           f"3; `webssl status {out}` says why); rerun the same command to "
                           "retry them")

    def failed_elsewhere(self) -> set[str]:
        """Units other ranks of this job gave up on (not retried here)."""
        return failed_in_job(self.prep.layout, self.rank.job, self.started_at) - set(self.failed)

    # -- model -------------------------------------------------------------------------
    def run_batch(self, pending):
        """Queue the next assembled batch on the device (its host copy queued right behind
        it), then bring the previous one home while this one computes."""
        taken = self.assembler.take()
        if taken is None:
            return pending
        segments, images = taken
        t0 = time.perf_counter()
        c = self.counters
        if c.first_batch is None:     # (a wait for other ranks' units before it not counted)
            c.first_batch = t0 - (c.loop_started or t0) - c.others_wait_seconds
        feats = self.backoff(self.step, images)
        feats[NONFINITE] = nonfinite_rows(feats)
        copy = HostCopy(feats)          # queued on the device, not synced
        self.counters.model_seconds += time.perf_counter() - t0
        self.finalize(pending)
        return (segments, copy)

    def finalize(self, pending) -> None:
        """Bring one batch's features to host memory and file them under their units."""
        if pending is None:
            return
        segments, copy = pending
        t0 = time.perf_counter()
        host = copy.wait()
        self.counters.model_seconds += time.perf_counter() - t0
        for seg, rows in split_rows(segments, host):
            st = self.inflight[seg.unit_index]
            n = len(seg)
            flags = rows.pop(NONFINITE)
            seg, rows, bad = split_nonfinite(seg, rows, flags, list(rows),
                                             self.prep.cfg.output.out_dtype, self.precision)
            if bad:
                self.on_nonfinite(st, bad)
            before = st.nbytes
            st.add_rows(seg.indices, seg.keys, seg.sources, seg.metas, rows)
            self.held.add(st.nbytes - before)
            st.pending_rows -= n
            self.counters.images += len(seg)
            self.maybe_complete(st)
        self.spiller.check(self.inflight)

    def on_nonfinite(self, st: UnitState, bad: list) -> None:
        """Flagged rows become failures of their unit; the first ones are also logged."""
        st.failures += bad
        self.counters.failures += len(bad)
        if not self.nonfinite_said:
            self.nonfinite_said = True
            log(self.rank, f"warning: {bad[0].key}: {bad[0].message}. Such images are recorded "
                           "as failures (NonFiniteFeatures), not written; `webssl status` "
                           "counts them")

    def on_batch(self, b: Batch, pending):
        st = self.inflight[b.unit_index]
        self.counters.read_seconds += b.decode_seconds
        if self.share is not None:
            self.share.on_piece(b)
        if b.failures:
            st.failures += b.failures
            self.counters.failures += len(b.failures)
        if b.raw_sizes:                # --decode gpu: decoded on the side thread, added later
            st.pending_rows += len(b.indices) + len(b.raw_sizes)
            self.decoder.submit(b)
        else:
            st.pending_rows += len(b.indices)
            self.add_rows(b)
        pending = self.collect_decoded(pending, keep=DECODE_AHEAD)
        while self.assembler.ready():
            pending = self.run_batch(pending)
        if b.end:
            st.samples_seen += b.samples_seen
            if b.read_error:
                st.read_errors.append(b.read_error)
            st.parts_left -= 1
            self.maybe_complete(st)
        return pending

    def next_input(self, source: BatchSource, flag: StopFlag, progress: Progress, pending):
        """The loader's next piece, waited for in WAIT_SLICE slices: while the input stalls
        the progress line says so (a hang is told from a slow input), and after FLUSH_AFTER
        the rows already read run as a partial batch (padded with --compile, no recompile),
        so the units they finish are committed now, not when the input resumes (a kill
        during the stall would lose them). Returns (piece, pending)."""
        stalled_since = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            with flag.waiting():
                b = source.next_batch(timeout=WAIT_SLICE)
            self.counters.wait_seconds += time.perf_counter() - t0
            if b is not None:
                return b, pending
            stalled = time.perf_counter() - stalled_since
            if stalled >= FLUSH_AFTER and self.holds_rows(pending):
                self.drain(pending)
                pending = None
            if stalled >= SHM_HINT_AFTER and self.rt.num_workers and not self.shm_said:
                hint = stall_hint(self.piece_bytes)    # said once, if /dev/shm is full
                if hint:
                    self.shm_said = True
                    log(self.rank, hint)
            progress.update(self.counters, waiting=stalled)

    def fit_prefetch(self, batch: int) -> int:
        """The loader's prefetch per worker, lowered to what /dev/shm has room for (the
        workers' pieces pass through it); UsageError when not even one piece fits."""
        args = (batch, self.rt.num_workers, self.prep.pcfg.resolution, self.rt.decode == "gpu")
        self.piece_bytes = piece_bytes(*args)
        return loader_prefetch(*args, self.rt.prefetch_factor, self.device.type == "cuda",
                               lambda msg: log(self.rank, msg))

    def holds_rows(self, pending) -> bool:
        """Rows read but not yet in their units: assembled, decoding, or on the device."""
        decoding = self.decoder is not None and len(self.decoder) > 0
        return pending is not None or self.assembler.rows > 0 or decoding

    def add_rows(self, b: Batch) -> None:
        """Hand a batch's decoded rows (if any) to the assembler."""
        if b.images is not None and b.indices:
            self.assembler.add(Segment(b.unit_index, b.images, b.indices, b.keys, b.sources,
                                       b.metas))

    def collect_decoded(self, pending, keep: int):
        """Take the batches the decode thread has finished (waiting while more than ``keep``
        are in flight) into the assembler; run every full batch they complete."""
        if self.decoder is None:
            return pending
        while True:
            for d in self.decoder.finished():
                st = self.inflight[d.batch.unit_index]
                self.counters.decode_thread_seconds += d.seconds
                self.share.on_thread_batch(d.raw, d.seconds)
                st.failures += d.failures
                st.pending_rows -= len(d.failures)
                self.counters.failures += len(d.failures)
                self.add_rows(d.batch)
                while self.assembler.ready():
                    pending = self.run_batch(pending)
                self.maybe_complete(st)
            if len(self.decoder) <= keep:
                return pending
            t0 = time.perf_counter()
            with self.flag.waiting():
                self.decoder.wait_oldest()
            self.counters.wait_seconds += time.perf_counter() - t0

    def drain(self, pending) -> None:
        """End of input: finish the decodes, run what the assembler still holds, then bring
        the last batch home."""
        pending = self.collect_decoded(pending, keep=0)
        while self.assembler.rows:
            pending = self.run_batch(pending)
        self.finalize(pending)

    def maybe_complete(self, st: UnitState) -> None:
        """A unit is complete once all its parts ended and none of its rows are in flight."""
        if st.parts_left == 0 and st.pending_rows == 0 and st.unit.index in self.inflight:
            self.unit_complete(self.inflight.pop(st.unit.index))

    def on_backoff(self, old: int, new: int) -> None:
        if self.step.pad_to:            # compiled: pad to the new size (one recompile)
            self.step.pad_to = new
        log(self.rank, f"out of memory at batch {old}: continuing with batches of {new}")

    # -- writing -----------------------------------------------------------------------
    def unit_complete(self, st: UnitState) -> None:
        if st.read_errors:
            self.fail_unit(st, "; ".join(st.read_errors))
            return
        if st.samples_seen != st.rows + len(st.failures):
            self.fail_unit(st, f"accounting mismatch: {st.samples_seen} samples read, "
                               f"{st.rows} rows + {len(st.failures)} failures"
                               + (LOST_PIECES if self.rt.num_workers else ""))
            return
        self.writes.submit(lambda: self.write_unit(st), self.flag.waiting, nbytes=st.nbytes,
                           cost=st.nbytes + st.spilled)

    def write_unit(self, st: UnitState) -> None:
        """On the writer thread: write the unit; its rows count as written if this copy was
        the one committed (the writer counts the unit done only then)."""
        before = self.counters.units_done
        try:
            self.spiller.settle(st)
            self.writer.write(st)
        finally:
            if st.spool is not None:
                self.spiller.remove(st.spool)
        if self.counters.units_done > before:
            self.counters.images_written += st.rows

    def fail_unit(self, st: UnitState, why: str) -> None:
        unit = st.unit
        self.failed.append(unit.id)
        self.skip.add(unit.id)
        self.counters.units_failed += 1
        log(self.rank, f"unit {unit.id} ({unit.source}) could not be completed: {why}. "
                       "It was not written; rerun the same command to retry it.")
        try:       # so the job's other ranks do not retry it one after another
            record_unit_failure(self.prep.layout, unit, why, self.rank.owner, self.rank.job)
        except OSError as exc:
            log(self.rank, f"warning: could not record the failure of unit {unit.id}: {exc}")
        self.release(unit.id)
        self.held.release(st.nbytes)
        self.spiller.discard(st, self.writes)

    def release(self, unit_id: str) -> None:
        with self.heartbeat.lock:
            self.heartbeat.units.discard(unit_id)
        self.claims.release(unit_id)

    # -- main loop ---------------------------------------------------------------------
    def run(self, flag: StopFlag) -> RunResult:
        """The main loop. ``flag`` is interruptible on entry (model loading holds no claim)."""
        from ..model_step.autobatch import OOMBackoff
        prep, rt = self.prep, self.rt
        exit_code = EXIT_OK
        pending = source = progress = None
        self.flag = flag
        if rt.limit_units == 0:
            return plan_only(self.prep, self.rank)
        try:
            done_before = len(self.done_units(prep.layout))
            # a /dev/shm too small is refused before the model loads, where the batch is known
            fixed = rt.batch_size if rt.batch_size != "auto" else None
            prefetch = self.fit_prefetch(fixed) if fixed is not None else None
            self.step = build_step(prep, self.device, self.precision)
            bs = settle_batch_size(self.step, prep, self.rank)
            if prefetch is None or bs != fixed:
                prefetch = self.fit_prefetch(bs)
            self.backoff = OOMBackoff(bs, on_backoff=self.on_backoff)
            self.assembler = BatchAssembler(bs, self.device)
            if rt.decode == "gpu":
                self.decoder = DeviceDecoder(prep.pcfg, self.device)
                self.share = ShareEstimate(rt.num_workers, rt.cpu_share)
            # from here on only while blocked (flag.waiting): not while the DataLoader forks
            # its workers (a stop raised in an at-fork hook is only printed) or later on
            flag.interruptible = False
            source = BatchSource(prep.cfg.input, prep.pcfg, bs, rt.num_workers,
                                 pin_memory=self.device.type == "cuda",
                                 prefetch_factor=prefetch,
                                 gpu_decode=rt.decode == "gpu",
                                 share=self.share.share if self.share else None)
            progress = Progress(len(prep.units), done_before, self.rank.prefix,
                                rt.progress_every,
                                done_counter=lambda: len(self.done_units(prep.layout)),
                                limit=rt.limit_units)
            self.heartbeat.start()
            self.counters.loop_started = time.perf_counter()
            self.claim_more(source, flag)
            while True:
                while source.outstanding > 0:
                    b, pending = self.next_input(source, flag, progress, pending)
                    if self.share is not None:
                        self.share.busy_parts(source.outstanding)
                    pending = self.on_batch(b, pending)
                    self.claim_more(source, flag)
                    progress.update(self.counters)
                flag.check()
                self.drain(pending)
                pending = None
                self.counters.mark_streamed()
                if not self.wait_for_others(source, flag, progress):
                    break
            self.writes.drain(flag.waiting)
        except Preempted as exc:
            exit_code = EXIT_PREEMPTED
            log(self.rank, str(exc))
        finally:
            flag.interruptible = False
            write_error = self.shut_down(source, progress, cancel=exit_code == EXIT_PREEMPTED)
        if write_error is not None:
            raise write_error
        if exit_code == EXIT_OK and self.failed:
            exit_code = EXIT_INCOMPLETE
        if exit_code != EXIT_PREEMPTED:
            exit_code = max(exit_code, self.check_complete())
        if exit_code == EXIT_OK:
            exit_code = check_damage(self.prep, self.rank)
        self.counters.peak_feature_bytes = self.held.peak
        self.counters.spilled_bytes = self.spiller.spilled_bytes
        if self.share is not None:
            self.counters.cpu_share = self.share.picked_fraction()
            self.counters.cpu_share_mode = ("auto" if rt.cpu_share is None
                                            else f"{rt.cpu_share:g}")
        text = summary(self.counters, max(rt.num_workers, 1),
                       cuda=self.device.type == "cuda") + limit_note(self.prep)
        log(self.rank, text)
        c = self.counters
        return RunResult(exit_code, len(prep.units), c.units_done, self.failed, c.images,
                         c.failures, c.elapsed, c.loop_seconds, c.first_batch or 0.0,
                         c.steady_seconds, text, c.peak_feature_bytes,
                         c.decode_thread_seconds, c.spilled_bytes, c.cpu_share)

    def check_complete(self) -> int:
        """Exit 0 promises that every planned unit is done (`webssl extract --help`). At the
        end of a run that did all it could claim, a unit may still be missing because this
        rank gave it up (reported, exit 3 already), another rank of the same launcher job
        did (that rank exits 3, and so the job), or another process on this output (a second
        command without a job id) gave it up or still holds it: then this run exits 3 too,
        saying which and why. With --limit-units the run was asked for a share only, and
        that share decides (completion.limit_note)."""
        if self.rt.limit_units is not None:
            return EXIT_OK
        layout = self.prep.layout
        done = set(self.done_units(layout))
        reported = set(self.failed) | (self.failed_elsewhere() if self.rank.job else set())
        left = [u for u in self.prep.units if u.id not in done and u.id not in reported]
        if not left:
            return EXIT_OK
        others = [c for c in self.claims.active_claims() if c.owner != self.rank.owner]
        log(self.rank, not_done_message(left, len(self.prep.units), list_unit_failures(layout),
                                        others, layout.out_dir))
        return EXIT_INCOMPLETE

    def shut_down(self, source: BatchSource | None, progress: Progress | None,
                  cancel: bool) -> BaseException | None:
        """Stop the decoder and the workers, finish the queued writes (drop them if
        ``cancel``), release the claims, stop the heartbeat; returns a write's error. Each
        step runs even when one before it was cut short: under the Python API a second stop
        signal raises in the middle of this, and claims left held (their process, the
        caller's interpreter, still alive) would make the caller's rerun wait out the lease."""
        try:
            try:
                if self.decoder is not None:
                    self.decoder.close()
            finally:
                if source is not None:
                    source.close()
        finally:
            try:
                error = self.writes.close(cancel=cancel, grace=STOP_WRITE_GRACE)
                # the writer thread has ended (a write still running waited for its spills):
                # end the spill thread and remove the spools of units in flight or whose
                # write was cancelled (after an abandon a write may still read its spool:
                # those are left to the sweep of a later run)
                spill_error = self.spiller.close(cancel=cancel)
                return error or spill_error
            except BaseException:
                self.writes.abandon()
                self.spiller.queue.abandon()
                raise
            finally:
                self.counters.write_wait_seconds = (self.writes.wait_seconds
                                                    + self.spiller.queue.wait_seconds)
                self.counters.write_drain_seconds = (self.writes.drain_seconds
                                                     + self.spiller.queue.drain_seconds)
                self.release_all()
                self.heartbeat.stop.set()
                if progress is not None:
                    progress.update(self.counters, force=True, final=True)
                    progress.close()

    def release_all(self) -> None:
        """Release every claim still held: units in flight, and units whose queued write was
        cancelled by a stop signal. Their data was never committed; a rerun redoes them. A
        claim that cannot be removed is warned about, not raised: the error that stopped the
        run is the news."""
        with self.heartbeat.lock:
            held = list(self.heartbeat.units)
        stuck: list[str] = []
        error: OSError | None = None
        for uid in held:
            try:
                self.release(uid)
            except OSError as exc:   # the output went read-only, say: keep the first error
                stuck, error = stuck + [uid], exc
        if stuck:
            log(self.rank, f"warning: could not release the claims of {len(stuck)} unit(s) "
                           f"(first {stuck[0]}: {error.strerror or error}); a rerun on this "
                           "machine takes them over at once, other machines after --lease")
        self.inflight.clear()
