import Dispatch
import Foundation
import SyncCore
import SyncFS
import SyncStore
import SyncWire

/// A wiped or replaced folder never becomes deletions (Docs/UserGuide.md, "A wiped or replaced
/// folder"). The folder's contents are *unknown* after its marker was missing, after a scan found
/// most of its index gone at once, and after `--rebuild-index`. Meanwhile scans record what is on
/// disk as usual but set every missing path aside (out of the index, nothing announced), and
/// set-aside entries are pulled back from peers: replanned like a peer's manifest holding exactly
/// the version we had, so a peer's equal or newer version lands here again. The state ends when
/// nothing is set aside any more, or when the user runs `syncd accept-deletions`.
extension FolderService {
    /// Every second: resume a folder whose marker is back, and pull back what is set aside.
    func startRecovery() {
        let t = DispatchSource.makeTimerSource(queue: DispatchQueue.global())
        t.setEventHandler { [weak self] in self?.recoveryTick() }
        t.schedule(deadline: .now() + 1, repeating: 1)
        t.resume()
        recoveryTimer = t
    }

    private func recoveryTick() {
        let (paused, unknown) = lock.withLock { (pausedForMarker, contentsUnknown || missingCount > 0) }
        if paused {
            if FileManager.default.fileExists(atPath: record.path + "/.syncd") { enqueue(WatchBatch(rescanAll: true)) }
        } else if unknown {
            restoreFromPeers()
        }
    }

    var unknownMessage: String {
        let count = missingCount == 0 ? "" : "; \(missingCount) indexed paths missing here are pulled back from peers, "
            + "not deleted anywhere. To delete them everywhere instead: syncd accept-deletions \(record.path)"
        return "contents unknown (\(unknownReason))\(count)"
    }

    /// Persists the unknown state (once) and says why.
    func enterUnknown(_ reason: String) {
        let first = lock.withLock { () -> Bool in
            defer { contentsUnknown = true; unknownReason = reason }
            return !contentsUnknown
        }
        guard first else { return }
        do { try store.setContentsUnknown(true, folder: record.id) } catch {
            logger.error("cannot record that the folder's contents are unknown: \(error)")
        }
        logger.warning("folder contents unknown (\(reason)): missing files will be pulled back from peers, never announced as deleted")
    }

    /// How this scan treats indexed paths it cannot find.
    func missingPolicy() -> MissingPaths {
        lock.withLock {
            if DispatchTime.now().uptimeNanoseconds < deletionsAcceptedUntil { return .delete }
            return contentsUnknown ? .setAside : .deleteUnlessMost
        }
    }

    /// A scan found paths missing that must not become deletions: take them out of the index.
    func setAside(_ report: ScanReport) throws {
        if report.mostMissing {
            enterUnknown("a scan found \(report.setAside.count) indexed paths missing at once, most of the folder")
        }
        let moved = try store.setAside(report.setAside, folder: record.id)
        lock.withLock { missingCount += moved }
        logger.notice("\(moved) indexed paths missing here are set aside, not recorded as deleted; pulling them back from peers")
        DispatchQueue.global().async { [weak self] in self?.restoreFromPeers() }
    }

    /// Ends the unknown state once nothing is set aside any more. Runs on the folder's queue (a
    /// scan setting paths aside is never interleaved with it).
    func settleUnknown() {
        guard lock.withLock({ contentsUnknown || missingCount > 0 }) else { return }
        guard let count = try? store.missingCount(folder: record.id) else { return }
        let leave = lock.withLock { () -> Bool in
            missingCount = count
            return contentsUnknown && count == 0
        }
        guard leave, (try? store.setContentsUnknown(false, folder: record.id)) != nil else { return }
        lock.withLock { contentsUnknown = false; unavailable = [:] }
        logger.notice("folder contents known again: everything missing is back or settled by peers")
    }

    /// Pulls back up to 1,000 set-aside entries through the exchange; paths no peer can serve
    /// are asked for again 30 s later (a file only this device ever had stays set aside).
    func restoreFromPeers() {
        guard let restore, !isPaused else { return }
        let now = DispatchTime.now().uptimeNanoseconds
        let skip: Set<String>? = lock.withLock {
            guard !restoring, !stopped else { return nil }
            restoring = true
            unavailable = unavailable.filter { $0.value > now }
            return Set(unavailable.keys)
        }
        guard let skip else { return }
        let batch = ((try? store.missingEntries(folder: record.id, limit: 1000 + skip.count)) ?? [])
            .filter { !skip.contains($0.path) }.prefix(1000)
        guard !batch.isEmpty else {
            lock.withLock { restoring = false }
            queue.async { [weak self] in self?.settleUnknown() }
            return
        }
        restore(Array(batch)) { [weak self] unavailable in
            guard let self else { return }
            let retry = DispatchTime.now().uptimeNanoseconds + 30_000_000_000
            lock.withLock {
                self.restoring = false
                for path in unavailable { self.unavailable[path] = retry }
            }
            queue.async { [weak self] in self?.settleUnknown() }
        }
    }

    /// `syncd accept-deletions`: records every set-aside path still missing on disk as deleted
    /// (announced to peers like any deletion), ends the unknown state, and for the next
    /// `acceptanceWindow` seconds lets scans record missing files as deleted whatever their
    /// number (a folder being emptied on purpose). Returns how many deletions were recorded.
    func acceptDeletions(acceptanceWindow: Double = 600) throws -> Int {
        guard scanner != nil else { return 0 }
        let fs = self.fs
        let recorded = try exclusive {
            try store.acceptMissingAsDeleted(folder: record.id, device: device) { path in
                (try? fs.metadata(path)).flatMap { $0 } == nil
            }
        }
        let remaining = (try? store.missingCount(folder: record.id)) ?? 0
        lock.withLock {
            contentsUnknown = false
            missingCount = remaining
            unavailable = [:]
            deletionsAcceptedUntil = DispatchTime.now().uptimeNanoseconds + UInt64(acceptanceWindow * 1e9)
        }
        logger.notice("deletions accepted by the user: \(recorded) set-aside paths recorded as deleted")
        if recorded > 0 { onIndexChanged?([]) }
        enqueue(WatchBatch(rescanAll: true))   // and whatever else is missing now
        return recorded
    }
}

extension FolderExchange {
    /// Pulls back entries this device's index held but its disk lost (set aside while the folder's
    /// contents were unknown). They are planned exactly like a peer's manifest holding these very
    /// versions: our index no longer has the paths, so the planner needs them, and the chunks come
    /// from the connected peers (a peer with a newer version sends that one through the normal
    /// exchange anyway). Runs on the exchange's queue, like every apply. `done` gets the paths no
    /// peer could serve; with no peer connected it gets none (nothing was tried).
    func restore(_ entries: [FileEntry], done: @escaping @Sendable ([String]) -> Void) {
        work.async { [self] in
            let connected = lock.withLock { links.values.filter { $0.access != nil } }
            guard let link = connected.first(where: { $0.access != .storage }) ?? connected.first,
                  !applier.scanner.isPaused() else { return done([]) }
            // Not a peer's batch: batch id 0, which the model's mass-deletion guard does not hold.
            defer { indexMoved() }   // what came back goes on to the other peers
            if applier.apply(0, entries.map { ManifestEntry($0) }, origin: link.device.short, from: link.device).isOK { return done([]) }
            // One file no peer has (only this device ever did) must not hold back the others.
            var unavailable: [String] = []
            for e in entries where (try? store.entry(folder: record.id, path: e.path)).flatMap({ $0 }) == nil {
                if !applier.apply(0, [ManifestEntry(e)], origin: link.device.short, from: link.device).isOK { unavailable.append(e.path) }
            }
            done(unavailable)
        }
    }
}

extension FolderService {
    /// Whether the user confirmed deletions here (`syncd accept-deletions`) in the last minutes:
    /// scans may record mass deletions and the receiver's mass-deletion guard lets them through.
    var deletionsAccepted: Bool { lock.withLock { DispatchTime.now().uptimeNanoseconds < deletionsAcceptedUntil } }
}
