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
    enum Step {
        case directory(FileEntry)
        case file(FileEntry, staged: String)
        case symlink(FileEntry)
        case delete(FileEntry)
        /// The remote version lost a conflict: keep its content beside ours.
        case conflictCopy(FileEntry, staged: String, name: String)
        /// The remote version of a symlink lost a conflict: keep the link beside ours.
        case conflictLink(FileEntry, name: String)
    }

    /// The receiver's mass-deletion guard (`GlobalState.isMassDeletion`): a batch that would delete
    /// most of our live files, from a peer that holds fewer than the rest, is held — a peer whose
    /// disk vanished must not empty every replica — until the user runs `syncd accept-deletions`
    /// here. Returns the reason when held. Deletions within a batch count from the 50 % of the
    /// folder; the peer's live count comes from its digest, and a peer that sent none counts as 0.
    func massDeletionHeld(_ steps: [Step], locals: [String: FileEntry], origin: ShortDeviceID, link: PeerLink) -> String? {
        var deleting = 0, creating = 0
        for step in steps {
            switch step {
            case .delete(let e): if let local = locals[e.path], !local.deleted { deleting += 1 }
            case .file(let e, _), .directory(let e), .symlink(let e): if locals[e.path].map({ $0.deleted }) ?? true { creating += 1 }
            default: break
            }
        }
        let configuration = GlobalState.Configuration()
        // A session's batches count together (a manifest holds at most 1,000 entries), counted
        // against what we held before them; the peer's live count is its last digest less what it
        // has deleted (net of what it created) since — digests are sent only once it is still.
        let (before, net, digestLive) = lock.withLock { (link.deleted, link.netDeleted, link.theirDigest.map { Int($0.liveCount) }) }
        let total = before + deleting
        guard deleting > 0, total >= configuration.massDeletionMinimum, let service, !service.deletionsAccepted,
              let stats = try? store.stats(folder: record.id) else {
            lock.withLock { link.deleted += deleting; link.netDeleted += deleting - creating }
            return nil
        }
        let live = stats.files + stats.symlinks + stats.directories + before
        let remoteLive = link.device.short == origin ? max(0, (digestLive ?? 0) - net - (deleting - creating)) : 0
        guard GlobalState.isMassDeletion(wouldDelete: total, liveLocal: live, remoteLive: remoteLive, configuration) else {
            lock.withLock { link.deleted += deleting; link.netDeleted += deleting - creating }
            return nil
        }
        return "held: \(link.device.short.hex) would delete \(total) of the \(live) files and directories here (it holds about \(remoteLive)); "
            + "if that is intended, run: syncd accept-deletions \(record.path)"
    }

    /// In `conflictsLocal`: our losing version goes to the trash instead of beside the winner.
    static let toTrash = "\u{0}trash"

    /// The path a step writes.
    static func path(of step: Step) -> String {
        switch step {
        case .directory(let e), .file(let e, _), .symlink(let e), .delete(let e), .conflictCopy(let e, _, _), .conflictLink(let e, _): e.path
        }
    }

    /// The step that puts `entry` in place.
    static func step(placing entry: FileEntry) -> Step {
        if entry.deleted { return .delete(entry) }
        switch entry.kind {
        case .directory: return .directory(entry)
        case .symlink: return .symlink(entry)
        case .file: return .file(entry, staged: "")
        }
    }

    /// Plans, stages and applies one manifest's entries; false if it must be retried later.
    func apply(_ listed: [ManifestEntry], origin: ShortDeviceID, from link: PeerLink) -> Bool {
        guard let service, !service.isPaused else { return false }
        var clock = StageClock()
        defer { renames = [:] }
        let entries: [FileEntry]
        do { entries = try resolvePieces(listed, from: link) } catch {
            logger.warning("chunk lists from \(link.device.short.hex) unavailable: \(error); will retry")
            lock.withLock { counters.batchError = "\(error)" }
            return false
        }
        var steps: [Step] = []
        var applied: [FileEntry] = []
        var conflictsLocal: [String: String] = [:]   // path → conflict name for our losing version
        var unplaced: [(path: String, error: Error)] = []   // paths not applied this time (retried)
        let locals = (try? store.entries(folder: record.id, paths: entries.map(\.path))) ?? [:]
        let needed = entries.map { remote in (remote, local: locals[remote.path]) }
        let bytesNeeded = needed.reduce(Int64(0)) { $0 + ($1.0.deleted ? 0 : $1.0.metadata.size) }
        lock.withLock { counters.needFiles += needed.count; counters.needBytes += bytesNeeded }
        defer { lock.withLock { counters.needFiles -= needed.count; counters.needBytes -= bytesNeeded } }
        do {
            // SyncReplication's GlobalState decides each path from our entry and the origin's
            // (the manifest's signature makes the origin a trusted writer); this loop only turns
            // its decisions into steps. Conflict copies are capped by moving the oldest to the
            // trash (`capConflictCopies`), so the planner itself never holds a conflict.
            let state = GlobalState(trustedWriters: [origin], configuration: .init(maxConflictCopies: .max))
            for (remote, local) in needed {
                let resolution = state.resolve(path: remote.path, local: local, peers: [origin: remote])
                var winner = remote
                winner.version = resolution.mergedVersion
                switch resolution.decision {
                case .inSync, .localIsNewer:
                    continue
                case .recordMergedVersion:
                    applied.append(winner)
                case .need(let entry):
                    winner = entry
                    winner.version = resolution.mergedVersion
                    if let local, !local.deleted, !winner.deleted, ConflictOrder.sameContent(local, winner),
                       local.metadata.mtimeNs == winner.metadata.mtimeNs {
                        applied.append(winner)   // only the history moved (say, our own version coming back merged)
                    } else if local == nil && winner.deleted {
                        applied.append(winner)   // a deletion of something we never had: remember it
                    } else {
                        steps.append(Self.step(placing: winner))
                    }
                case .conflict(let conflict):
                    lock.withLock { counters.conflicts += 1 }
                    logger.notice("conflict on \(remote.path): \(conflict.winnerIsLocal ? "our" : "the peer's") version wins")
                    for loser in conflict.losers {
                        // A conflict copy never becomes a conflict itself (no copy of a copy, no
                        // "name 2"): the losing copy goes to the trash here, and every other peer
                        // that holds it trashes it the same way when it resolves the same conflict.
                        if ConflictCopyName.original(of: remote.path) != nil {
                            if loser.isLocal { conflictsLocal[remote.path] = Self.toTrash }
                            continue
                        }
                        guard let copy = loser.copyName else { continue }
                        if loser.isLocal {
                            conflictsLocal[remote.path] = copy
                        } else if loser.entry.kind == .symlink {
                            steps.append(.conflictLink(loser.entry, name: copy))
                        } else {
                            steps.append(.conflictCopy(loser.entry, staged: "", name: copy))
                        }
                    }
                    // The winner keeps its own vector (GlobalState, rule 5): nothing to record
                    // when it is ours already.
                    if !conflict.winnerIsLocal {
                        winner = conflict.winner
                        winner.version = resolution.mergedVersion
                        steps.append(Self.step(placing: winner))
                    }
                case .conflictHeld(let hold):
                    logger.warning("conflict on \(remote.path) held: \(hold)")
                case .refused(let problem):
                    logger.warning("refused \(remote.path.debugDescription) from \(String(origin, radix: 16)): \(problem)")
                }
            }
            if let held = massDeletionHeld(steps, locals: locals, origin: origin, link: link) {
                logger.warning("\(held)")
                lock.withLock { counters.batchError = held }
                return false
            }
            waitForAnnouncedPeers(before: steps)
            renames = Self.renames(in: steps, locals: locals)   // read by stage() and place(), cleared on return
            clock.lap("plan")
            let unstaged = try stageAll(&steps, from: link, clock: &clock)
            clock.lap("stage")
            if unstaged.values.contains(where: { "\($0)" == "disk full" }) { throw PullError(description: "disk full") }
            for (i, error) in unstaged {
                let path = Self.path(of: steps[i])
                if let e = error as? PullError, e.gone, link.device.short == origin {
                    // Superseded at the source: its newer version comes in a later manifest.
                    logger.info("\(RelativePath.display(path)) changed again on \(link.device.short.hex) before its chunks came; waiting for the newer version")
                } else {
                    unplaced.append((path, error))
                }
            }
            steps = steps.indices.filter { unstaged[$0] == nil }.map { steps[$0] }
        } catch {
            logger.warning("pull from \(link.device.short.hex) failed: \(error); will retry")
            lock.withLock { counters.batchError = "\(error)" }
            cleanStaged(steps)
            if "\(error)" == "disk full" { service.pauseForFullDisk(needed: bytesNeeded) }
            return false
        }
        guard !steps.isEmpty || !applied.isEmpty || !unplaced.isEmpty else { return true }
        // A few files were fsynced as they were staged; many small ones are flushed at once here.
        let syncEach = Self.syncsEachFile(steps)
        var failed = unplaced
        do {
            if !syncEach { try flush() }
            clock.lap("flush")
            try service.exclusive {
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
                let placed = try place(steps, conflictsLocal: conflictsLocal, syncEach: syncEach)
                failed += placed.failed
                clock.lap("place")
                let stats = (applied + placed.done).map { e -> (entry: FileEntry, stat: FileMetadata) in
                    let m = (e.deleted ? nil : (try? folder.metadata(e.path)) ?? nil) ?? e.metadata
                    return (e, m)
                }
                try store.recordRemoteEntries(stats, folder: record.id)
                clock.lap("record")
            }
        } catch {
            logger.warning("applying changes from \(link.device.short.hex) failed: \(error); will retry")
            lock.withLock { counters.batchError = "\(error)" }
            cleanStaged(steps)
            return false
        }
        // Paths applied now (or superseded by what was recorded) no longer fail; the ones that
        // failed are reported until they apply, and block acknowledging this manifest.
        lock.withLock {
            counters.batchError = nil
            for e in entries { counters.failing[e.path] = nil }
            for f in failed { counters.failing[f.path] = "\(f.error)" }
        }
        if !failed.isEmpty {
            for f in failed { logger.warning("cannot apply \(RelativePath.display(f.path)) from \(link.device.short.hex): \(f.error); will retry") }
            cleanStaged(steps)
            return false
        }
        logger.info("applied \(steps.count) changes from \(link.device.short.hex) in \(clock)")
        pruneTrash()
        lock.withLock { for e in entries { link.received[e.path] = e.version.encoded } }
        pushLocalChanges()   // pass them on to other peers (not back to this one)
        return true
    }

    /// Puts staged files in place in one pass, every operation through `folder` (confined to the
    /// folder, never following a symlink): directories first (shallow to deep, owner-writable
    /// while their contents arrive), then files, symlinks and conflict copies, deletions (deep to
    /// shallow, into the trash), and last the directories' own modes (deep to shallow), so a
    /// read-only directory is read-only only once it is filled.
    ///
    /// Something of another kind at a path (a file where a directory goes, a directory or a symlink
    /// where a file goes…) is moved to the trash whole, then the new object takes its place.
    /// A path that cannot be placed is reported in `failed` and never stops the others.
    func place(_ steps: [Step], conflictsLocal: [String: String], syncEach: Bool) throws -> (done: [FileEntry], failed: [(path: String, error: Error)]) {
        var done: [FileEntry] = []
        var failed: [(path: String, error: Error)] = []
        var failedPaths: Set<String> = []
        func depth(_ p: String) -> Int { p.utf8.reduce(0) { $0 + ($1 == UInt8(ascii: "/") ? 1 : 0) } }
        let trash = trashDirectoryNow()
        func attempt(_ path: String, _ body: () throws -> Void) {
            do { try body() } catch {
                failed.append((path, error))
                failedPaths.insert(path)
            }
        }
        let dirs = steps.compactMap { if case .directory(let e) = $0 { e } else { nil } }.sorted { depth($0.path) < depth($1.path) }
        for e in dirs {
            attempt(e.path) {
                switch try folder.metadata(e.path)?.kind {
                case .directory?: break
                case nil: try folder.makeDirectory(e.path, mode: 0o700)
                case .file?, .symlink?:
                    try displace(e.path, trash: trash)
                    try folder.makeDirectory(e.path, mode: 0o700)
                }
            }
        }
        for step in steps {
            switch step {
            case let .file(e, staged):
                attempt(e.path) {
                    // An edit on disk that no scan has seen yet is kept first, named after itself.
                    let unindexed = try keepUnindexedEdit(e.path)
                    if !unindexed, let name = conflictsLocal[e.path], try folder.metadata(e.path) != nil {
                        if name == Self.toTrash { try moveToTrash(e.path, trash) } else { try renameWithoutReplacing(e.path, to: name) }
                    }
                    if try folder.metadata(e.path)?.kind == .directory { try displace(e.path, trash: trash) }
                    try folder.rename(staged, to: e.path, replacing: true)
                    done.append(e)
                }
            case let .conflictCopy(e, staged, name):
                attempt(e.path) { try renameWithoutReplacing(staged, to: name) }
            case let .conflictLink(e, name):
                attempt(e.path) { try renameWithoutReplacing(try makeLink(e), to: name) }
            case .symlink(let e):
                attempt(e.path) {
                    // As for files: an unscanned edit, or our losing version, is kept first.
                    let unindexed = try keepUnindexedEdit(e.path)
                    if !unindexed, let name = conflictsLocal[e.path], try folder.metadata(e.path) != nil {
                        if name == Self.toTrash { try moveToTrash(e.path, trash) } else { try renameWithoutReplacing(e.path, to: name) }
                    }
                    let link = try makeLink(e)
                    if try folder.metadata(e.path)?.kind == .directory { try displace(e.path, trash: trash) }
                    try folder.rename(link, to: e.path, replacing: true)
                    done.append(e)
                }
            case .directory, .delete:
                break
            }
        }
        let deletions = steps.compactMap { if case .delete(let e) = $0 { e } else { nil } }.sorted { depth($0.path) > depth($1.path) }
        let movedAway = Dictionary(renames.map { ($0.value.path, $0.key) }, uniquingKeysWith: { a, _ in a })
        for e in deletions {
            attempt(e.path) {
                guard let disk = try folder.metadata(e.path) else { done.append(e); return }
                if let newName = movedAway[e.path], let moved = try folder.metadata(newName), moved.kind == .file,
                   disk.kind == .file, moved.inode == disk.inode {
                    // Renamed: the content lives on under its new name (one inode), nothing to trash.
                    try folder.remove(e.path)
                } else if disk.kind == .directory {
                    do { try folder.remove(e.path) } catch let error as FileSystemError where error.errno == ENOTEMPTY || error.errno == EEXIST {
                        return   // something unknown is inside: keep it (and the directory)
                    }
                } else {
                    try keepUnindexedEdit(e.path, orTrashTo: trash)
                }
                done.append(e)
            }
        }
        for e in dirs.reversed() where !failedPaths.contains(e.path) {
            attempt(e.path) {
                try folder.setMode(e.path, e.metadata.mode & 0o7777)
                done.append(e)
            }
        }
        if syncEach {
            // The directories whose entries changed, rather than the whole file system.
            var touched: Set<String> = [".syncd/trash", trash]
            for step in steps {
                switch step {
                case .directory(let e), .file(let e, _), .symlink(let e), .delete(let e): touched.insert(RelativePath.parent(of: e.path))
                case .conflictCopy(_, _, let name), .conflictLink(_, let name): touched.insert(RelativePath.parent(of: name))
                }
            }
            for e in conflictsLocal.values { touched.insert(RelativePath.parent(of: e)) }
            for dir in touched { try? folder.synchronize(dir) }   // a directory a failed path never made
        } else {
            try flush()
        }
        return (done, failed)
    }

    /// Moves whatever is at `path` — a directory with everything under it, a file, a symlink — to
    /// the trash, so an object of another kind can take its place. An edit no scan has seen is
    /// kept as a conflict copy instead (`keepUnindexedEdit`).
    func displace(_ path: String, trash: String) throws {
        guard let disk = try folder.metadata(path) else { return }
        if disk.kind == .directory {
            try moveToTrash(path, trash)
        } else {
            try keepUnindexedEdit(path, orTrashTo: trash)
        }
        logger.notice("\(RelativePath.display(path)) changes kind (was a \(disk.kind)): the old one is in the trash")
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

    /// Batches of up to this many files are made durable file by file (fsync as each is staged,
    /// then the directories that changed); bigger ones with one `syncfs` before and after placing.
    /// `syncfs` flushes everything dirty on the file system — other applications' writes too — so
    /// it is kept for batches of many small files, where one flush beats hundreds.
    static let perFileSyncLimit = 32

    static func syncsEachFile(_ steps: [Step]) -> Bool {
        steps.lazy.filter { if case .directory = $0 { false } else { true } }.count <= perFileSyncLimit
    }

    /// `e`'s symlink, made under `.syncd/tmp/` (never followed), ready to be renamed into place.
    func makeLink(_ e: FileEntry) throws -> String {
        let temp = ".syncd/tmp/link-\(UInt64.random(in: 0...UInt64.max))"
        try folder.makeSymlink(temp, target: e.metadata.symlinkTarget ?? "")
        return temp
    }

    /// Before replacing or deleting a path: if the file on disk is not what the index says (an
    /// edit not scanned yet), move it aside as a conflict copy instead of losing it; if it is,
    /// move it to the trash when `trash` is given.
    /// Returns true when it moved an unindexed edit aside.
    @discardableResult
    func keepUnindexedEdit(_ path: String, orTrashTo trash: String? = nil) throws -> Bool {
        guard let disk = try folder.metadata(path) else { return false }
        let indexed = try knownStates.map { $0[path] } ?? store.scanState(folder: record.id, path: path)
        if let indexed, !indexed.deleted, disk.looksUnchanged(from: indexed.metadata) {
            guard let trash else { return false }
            try moveToTrash(path, trash)
            return false
        }
        if disk.kind == .directory {
            // A directory's contents are indexed path by path: the directory itself is no edit.
            if let trash { try moveToTrash(path, trash) }
            return false
        }
        if ConflictCopyName.original(of: path) != nil {
            // A copy this device made for the same conflict and has not scanned yet (two peers
            // resolving one conflict make the same copy): kept in the trash, never copied again.
            try moveToTrash(path, trash ?? trashDirectoryNow())
            return true
        }
        var local = FileEntry(path: path, metadata: disk, version: VersionVector(), sequence: 0)
        local.version = VersionVector([.init(device: me, value: 1)])
        let name = ConflictCopyName.original(of: path) != nil ? path : ConflictCopyName.make(for: path, loser: local) ?? path
        try renameWithoutReplacing(path, to: name)
        lock.withLock { counters.conflicts += 1 }
        logger.notice("kept an unscanned local edit of \(RelativePath.display(path)) as \(RelativePath.display(name))")
        return true
    }

    /// Keeps at most `maxConflictCopies` conflict copies per file: the oldest go to the trash.
    func capConflictCopies(of name: String) {
        guard let marker = name.range(of: ".sync-conflict-") else { return }
        let stem = String(name[..<marker.lowerBound])
        let dir = RelativePath.parent(of: name)
        let base = String(stem.split(separator: "/").last ?? "")
        let names = ((try? folder.list(dir)) ?? []).filter { $0.hasPrefix(base + ".sync-conflict-") }.sorted()
        guard names.count >= maxConflictCopies else { return }
        let trash = trashDirectoryNow()
        for old in names.prefix(names.count - maxConflictCopies + 1) {
            try? moveToTrash(RelativePath.join(dir, old), trash)
        }
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

    /// Renames onto `name`, or onto `name` with " 2", " 3"… before the extension when something
    /// else already has that name: a conflict copy never replaces another file.
    func renameWithoutReplacing(_ from: String, to name: String, cappingCopies: Bool = true) throws {
        if cappingCopies { capConflictCopies(of: name) }
        let (stem, ext) = ConflictCopyName.split(String(name.split(separator: "/").last ?? ""))
        var candidate = name
        var n = 1
        while true {
            do { return try folder.rename(from, to: candidate, replacing: false) } catch let e as FileSystemError where e.errno == EEXIST {
                n += 1
                candidate = RelativePath.join(RelativePath.parent(of: name), "\(stem) \(n)\(ext)")
            }
        }
    }

    /// Moves `path` (with everything under it) to the same relative place under `trash`.
    func moveToTrash(_ path: String, _ trash: String) throws {
        try renameWithoutReplacing(path, to: trash + "/" + path, cappingCopies: false)
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

    var description: String {
        let total = (DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1_000_000
        return "\(total) ms (" + laps.map { "\($0.0) \($0.1)" }.joined(separator: ", ") + ")"
    }
}

/// syncfs(2): Glibc's module map hides it behind _GNU_SOURCE.
@_silgen_name("syncfs")
private func linuxSyncfs(_ fd: Int32) -> Int32
