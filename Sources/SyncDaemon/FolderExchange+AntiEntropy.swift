@preconcurrency import Crypto
import Foundation
import SyncCore
import SyncStore
import SyncWire

/// Anti-entropy (Protocol/wire.md, "Anti-entropy"): read-write peers tell each other a digest of
/// their index — a hash over the live (path, version vector) set — whenever it changes and
/// nothing is moving here. Equal digests between peers that have each acknowledged the other's
/// whole index prove the two indexes equal (`syncd wait` requires it); digests that stay
/// different while both are caught up mean an earlier exchange lost something, and both sides
/// then resend their whole index (the planner skips what the other already has).
extension FolderExchange {
    /// How often the digest is checked (seconds); it is sent only when it changed.
    static let digestInterval = 0.25
    /// How long digests may differ between caught-up peers before a full resync (seconds).
    static let repairAfter = 2.0
    /// At most one full resync with the same peer this often (seconds).
    static let repairBackoff = 10.0

    /// Our digest, recomputed only when the folder's sequence moved.
    func currentDigest() -> SessionMessage.Digest? {
        guard let sequence = try? store.sequence(folder: record.id) else { return nil }
        if let cached = lock.withLock({ digestCache }), cached.sequence == UInt64(max(sequence, 0)) { return cached }
        guard let live = try? store.liveVersions(folder: record.id) else { return nil }
        var hash = [UInt8](repeating: 0, count: 32)
        for e in live.entries {
            let name = RelativePath.bytes(e.path) ?? Array(e.path.utf8)
            var h = SHA256()
            h.update(data: [UInt8(truncatingIfNeeded: name.count >> 8), UInt8(truncatingIfNeeded: name.count)] + name)
            h.update(data: e.version)
            for (i, b) in h.finalize().enumerated() { hash[i] ^= b }   // a set: the order of rows does not matter
        }
        let digest = SessionMessage.Digest(sequence: UInt64(max(live.sequence, 0)), liveCount: UInt64(live.entries.count), hash: hash)
        lock.withLock { digestCache = digest }
        return digest
    }

    /// Whether this device's and the peer's indexes are comparable at all: both read-write (a
    /// read-only device keeps its own edits, a storage device holds no plaintext index).
    func comparesDigests(with link: PeerLink) -> Bool {
        keys.access == .readWrite && lock.withLock { link.access == .readWrite }
    }

    func startAntiEntropy() {
        let timer = DispatchSource.makeTimerSource(queue: digestQueue)
        timer.setEventHandler { [weak self] in self?.antiEntropyTick() }
        timer.schedule(deadline: .now() + Self.digestInterval, repeating: Self.digestInterval)
        timer.resume()
        digestTimer = timer
    }

    func antiEntropyTick() {
        let targets = lock.withLock { links.values.filter { $0.lastSent != nil } }.filter(comparesDigests)
        guard !targets.isEmpty else { return }
        // Only while nothing moves here: a digest taken mid-apply or mid-scan is stale at once.
        let moving = lock.withLock { counters.needFiles > 0 || !inFlight.isEmpty } || (service?.isBusy ?? true)
        guard !moving, let ours = currentDigest() else { return }
        for link in targets {
            let fresh = lock.withLock { () -> Bool in
                defer { link.sentDigest = ours }
                return link.sentDigest != ours
            }
            if fresh { link.send(.digest(ours)) }
            if needsRepair(link, ours: ours) {
                logger.warning("index digests with \(link.device.short.hex) differ while both hold each other's whole index; resending both indexes in full")
                link.close?("anti-entropy: indexes differ; full resync")
            }
        }
    }

    /// True once the digests have differed for `repairAfter` seconds while each side holds the
    /// other's whole index; marks the peer for a full resend at the next hello.
    func needsRepair(_ link: PeerLink, ours: SessionMessage.Digest) -> Bool {
        let floor = loadGuardLocked()
        return lock.withLock {
            guard let theirs = link.theirDigest, theirs.hash != ours.hash else { link.digestDifferSince = nil; return false }
            let held = floor.seen[link.device.short].map { $0.indexID == link.indexID ? $0.lastSequence : 0 } ?? 0
            let caughtUp = held >= theirs.sequence && link.ackedIndexID == indexID && link.acked >= ours.sequence
            guard caughtUp else { link.digestDifferSince = nil; return false }
            let now = Date()
            guard let since = link.digestDifferSince else { link.digestDifferSince = now; return false }
            guard now.timeIntervalSince(since) >= Self.repairAfter else { return false }
            if let last = lastRepair[link.device.short], now.timeIntervalSince(last) < Self.repairBackoff { return false }
            lastRepair[link.device.short] = now
            fullResync.insert(link.device.short)
            return true
        }
    }

    func loadGuardLocked() -> ManifestGuard { lock.withLock { loadGuard() } }

    /// "agree", "differ", "pending" (no digest of the peer's current state yet) or "n/a" (not
    /// comparable) — `status` per peer; `wait` needs "agree" or "n/a".
    func digestState(_ link: PeerLink) -> String {
        guard comparesDigests(with: link) else { return "n/a" }
        guard let ours = currentDigest() else { return "pending" }
        return lock.withLock {
            guard let theirs = link.theirDigest else { return "pending" }
            return theirs.hash == ours.hash ? "agree" : "differ"
        }
    }
}
