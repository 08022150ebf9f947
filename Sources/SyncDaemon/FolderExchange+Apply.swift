@preconcurrency import Crypto
import Foundation
import Logging
import SyncCore
import SyncFS
import SyncReplication
import SyncSecurity
import SyncStore
import SyncWire

/// Planning and applying a manifest's entries (Protocol/wire.md, "Replication" 4–6): decisions
/// from `GlobalState`, staging (FolderExchange+Pull.swift), then one placement pass between scans.
extension FolderExchange {
    typealias Step = FolderPlacer.Step

    /// Plans, stages and applies batch `id` (one manifest's entries): what failed, if anything, is
    /// retried (FolderModel decides how). The receiver's mass-deletion guard
    /// (`FolderModel.massDeletionHeld`) holds a batch that would delete most of our live files,
    /// from a peer that holds fewer, until the user runs `syncd accept-deletions` here.
    func apply(_ id: FolderModel.BatchID, _ listed: [ManifestEntry], origin: ShortDeviceID, from link: PeerLink) -> FolderModel.ApplyResult {
        guard !scanner.isPaused() else { return .init(batchError: "the folder is paused") }
        var clock = StageClock()
        defer { renames = [:] }
        let entries: [FileEntry]
        do { entries = try resolvePieces(listed, from: link) } catch {
            logger.warning("chunk lists from \(link.device.name) unavailable: \(error); will retry")
            return .init(batchError: "\(error)")
        }
        var unplaced: [(path: String, error: Error)] = []   // paths not applied this time (retried)
        let locals = (try? store.entries(folder: record.id, paths: entries.map(\.path))) ?? [:]
        let bytesNeeded = entries.reduce(Int64(0)) { $0 + ($1.deleted ? 0 : $1.metadata.size) }
        lock.withLock { counters.needFiles += entries.count; counters.needBytes += bytesNeeded }
        defer { lock.withLock { counters.needFiles -= entries.count; counters.needBytes -= bytesNeeded; counters.doneFiles += entries.count; counters.doneBytes += bytesNeeded } }
        // SyncReplication decides each path from our entry and the origin's (the manifest's
        // signature makes the origin a trusted writer): the same `BatchPlan` the simulator runs.
        let plan = BatchPlan.make(entries, locals: locals, origin: origin)
        var steps = plan.steps.map(Step.init)
        let applied = plan.recordOnly
        let conflictsLocal = plan.conflictsLocal
        if plan.conflicts > 0 { lock.withLock { counters.conflicts += plan.conflicts } }
        events.conflicts(plan.conflictPaths)
        for note in plan.notes { logger.notice("\(note)") }
        let counts = plan.deletions(against: locals)
        do {
            let live = (try? store.stats(folder: record.id)).map { $0.files + $0.symlinks + $0.directories } ?? 0
            let held: String? = lock.withLock {
                model.deletionsAccepted = scanner.deletionsAccepted()
                return model.massDeletionHeld(id, deleting: counts.deleting, creating: counts.creating, liveHere: live)
            }
            if let held {
                let reason = held + "; if that is intended, run: syncd accept-deletions \(record.path)"
                logger.warning("\(reason)")
                return .init(batchError: reason)
            }
            renames = Self.renames(in: steps, locals: locals)   // read by stage() and place(), cleared on return
            clock.lap("plan")
            let unstaged = try stageAll(&steps, from: link, clock: &clock)
            clock.lap("stage")
            if unstaged.values.contains(where: { "\($0)" == "disk full" }) { throw PullError(description: "disk full") }
            for (i, error) in unstaged {
                let path = steps[i].path
                if let e = error as? PullError, e.gone, link.device.short == origin {
                    // Superseded at the source: its newer version comes in a later manifest.
                    logger.info("\(RelativePath.display(path)) changed again on \(link.device.name) before its chunks came; waiting for the newer version")
                } else {
                    unplaced.append((path, error))
                }
            }
            steps = steps.indices.filter { unstaged[$0] == nil }.map { steps[$0] }
        } catch {
            logger.warning("pull from \(link.device.name) failed: \(error); will retry")
            cleanStaged(steps)
            if "\(error)" == "disk full" { scanner.pauseForFullDisk(bytesNeeded) }
            return .init(batchError: "\(error)", deleted: counts.deleting, created: counts.creating)
        }
        guard !steps.isEmpty || !applied.isEmpty || !unplaced.isEmpty else { return .init(deleted: counts.deleting, created: counts.creating) }
        // A few files were fsynced as they were staged; many small ones are flushed at once here.
        let syncEach = Self.syncsEachFile(steps)
        var failed = unplaced
        var notDurable: Error?
        do {
            if !syncEach { try flush() }
            clock.lap("flush")
            try scanner.exclusive {
                clock.lap("wait")
                // The plan was made against the index as it was before staging; a scan may have
                // recorded a local edit since. Placing now would overwrite that edit unseen, so
                // plan again instead (the batch is retried against the new local versions).
                let current = try store.entries(folder: record.id, paths: entries.map(\.path))
                if let moved = entries.first(where: { current[$0.path]?.version != locals[$0.path]?.version }) {
                    throw PullError(description: "\(moved.path) changed here while its update was staged")
                }
                knownStates = try store.scanStates(folder: record.id, paths: entries.map(\.path))
                defer { knownStates = nil }
                let placed = try placer.place(steps, conflictsLocal: conflictsLocal, renames: renames, syncEach: syncEach)
                if placed.keptEdits > 0 { lock.withLock { counters.conflicts += placed.keptEdits } }
                failed += placed.failed
                clock.lap("place")
                // What was placed is recorded as it was right after placing it; what only changed history keeps
                // the metadata the scan saw — the disk's may be an edit no scan has seen yet, which
                // recording it would hide from every later scan (found by the simulator, seed 47).
                let placedStats = placed.done.map { e -> (entry: FileEntry, stat: FileMetadata) in
                    (e, e.deleted ? e.metadata : placed.metadata[e.path] ?? e.metadata)
                }
                let stats = applied.map { e in (entry: e, stat: locals[e.path].map { $0.deleted ? e.metadata : $0.metadata } ?? e.metadata) } + placedStats
                try store.recordRemoteEntries(stats, folder: record.id)
                if !placed.done.isEmpty { events.batchApplied(placed.done.map(\.path), from: link.device.description, seconds: clock.seconds) }
                notDurable = placed.flushError
                clock.lap("record")
            }
        } catch {
            logger.warning("applying changes from \(link.device.name) failed: \(error); will retry")
            cleanStaged(steps)
            return .init(batchError: "\(error)", deleted: counts.deleting, created: counts.creating)
        }
        if let notDurable {
            // In place and recorded, but not known to be on disk: not acknowledged, applied again.
            logger.warning("changes from \(link.device.name) placed but not flushed: \(notDurable); will retry")
            cleanStaged(steps)
            return .init(batchError: "flushing the folder failed: \(notDurable)", deleted: counts.deleting, created: counts.creating)
        }
        // The paths that failed are reported until they apply, and block acknowledging this manifest.
        let failing = Dictionary(failed.map { ($0.path, "\($0.error)") }, uniquingKeysWith: { a, _ in a })
        if !failed.isEmpty {
            for f in failed { logger.warning("cannot apply \(RelativePath.display(f.path)) from \(link.device.name): \(f.error); will retry") }
            cleanStaged(steps)
            return .init(failed: failing, deleted: counts.deleting, created: counts.creating)
        }
        logger.info("applied \(steps.count) changes from \(link.device.name) in \(clock)")
        pruneTrash()
        return .init(deleted: counts.deleting, created: counts.creating)
    }

    /// Files the batch creates whose content, mode and mtime are exactly those of a local file
    /// the same batch deletes: a rename or move on the peer (target → the local entry).
    static func renames(in steps: [Step], locals: [String: FileEntry]) -> [String: FileEntry] {
        var deleted: [[ChunkRef]: FileEntry] = [:]
        for case .delete(let e) in steps {
            if let local = locals[e.path], !local.deleted, local.kind == .file, !local.chunks.isEmpty { deleted[local.chunks] = local }
        }
        guard !deleted.isEmpty else { return [:] }
        var out: [String: FileEntry] = [:]
        var used: Set<String> = []
        for case .file(let e, _) in steps {
            guard let source = deleted[e.chunks], !used.contains(source.path), source.metadata.mode == e.metadata.mode,
                  source.metadata.mtimeNs == e.metadata.mtimeNs else { continue }
            used.insert(source.path)
            out[e.path] = source
        }
        return out
    }

    static func syncsEachFile(_ steps: [Step]) -> Bool { FolderPlacer.syncsEachFile(steps) }

    /// The placer of this folder: every operation through `folder`, unscanned edits checked
    /// against the index as read for this batch (`knownStates`).
    var placer: FolderPlacer {
        FolderPlacer(folder: folder, me: me, maxConflictCopies: maxConflictCopies,
                     indexed: { [self] path in try knownStates.map { $0[path] } ?? store.scanState(folder: record.id, path: path) },
                     trashDirectory: { [self] in trashDirectoryNow() },
                     temporaryName: { ".syncd/tmp/link-\(UInt64.random(in: 0...UInt64.max))" },
                     flush: { [self] in try flush() },
                     log: { [logger] in logger.notice("\($0)") })
    }

    /// `.syncd/trash/<UTC time>` (relative to the folder): where this moment's deletions and
    /// displaced copies go.
    func trashDirectoryNow() -> String {
        ".syncd/trash/" + UTCTimestamp.compact(Int64(Date().timeIntervalSince1970 * 1e9))
    }

    /// Deleted files older than `trashRetention` leave the trash for good (checked after applies).
    func pruneTrash() {
        let cutoff = UTCTimestamp.compact(Int64((Date().timeIntervalSince1970 - trashRetention) * 1e9))
        for stamp in (try? folder.list(".syncd/trash")) ?? [] where stamp < cutoff {
            try? folder.removeTree(".syncd/trash/" + stamp)
        }
    }

    /// One `syncfs` for a batch of many files instead of one fsync per file.
    func flush() throws {
        let fd = open(record.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        defer { close(fd) }
        if linuxSyncfs(fd) != 0 { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
    }

    func cleanStaged(_ steps: [Step]) {
        for step in steps {
            switch step {
            case .file(_, let staged), .conflictCopy(_, let staged, _): if !staged.isEmpty { try? folder.remove(staged) }
            default: break
            }
        }
    }
}

/// Where an apply spends its time, for the log line: "412 ms (plan 3, pull 120, …)".
struct StageClock: CustomStringConvertible {
    private var start = DispatchTime.now(), last = DispatchTime.now()
    private var laps: [(String, UInt64)] = []

    mutating func lap(_ name: String) {
        let now = DispatchTime.now()
        laps.append((name, (now.uptimeNanoseconds - last.uptimeNanoseconds) / 1_000_000))
        last = now
    }

    /// Seconds since the apply started.
    var seconds: Double { Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9 }

    var description: String {
        let total = (DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1_000_000
        return "\(total) ms (" + laps.map { "\($0.0) \($0.1)" }.joined(separator: ", ") + ")"
    }
}

/// syncfs(2): Glibc's module map hides it behind _GNU_SOURCE.
@_silgen_name("syncfs")
private func linuxSyncfs(_ fd: Int32) -> Int32
