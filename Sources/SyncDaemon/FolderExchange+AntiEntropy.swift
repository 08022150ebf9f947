@preconcurrency import Crypto
import Foundation
import SyncCore
import SyncReplication
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
    // How long digests may differ before a full resend, and how often one happens per peer:
    // FolderModel.Configuration (repairAfter 2 s, repairBackoff 10 s).

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

    func startAntiEntropy() {
        let timer = DispatchSource.makeTimerSource(queue: digestQueue)
        timer.setEventHandler { [weak self] in self?.antiEntropyTick() }
        timer.schedule(deadline: .now() + Self.digestInterval, repeating: Self.digestInterval)
        timer.resume()
        digestTimer = timer
    }

    /// The model's tick (`FolderModel.tick`): only while nothing moves here — a digest taken
    /// mid-apply or mid-scan is stale at once — the digest goes to the peers whose differs, and
    /// digests that stay different between caught-up peers ask for a full resend (both ways).
    func antiEntropyTick() {
        let moving = lock.withLock { counters.needFiles > 0 } || applier.scanner.isBusy()
        let ours = moving ? nil : currentDigest()
        perform(lock.withLock { () -> [FolderModel.Directive] in
            var out: [FolderModel.Directive] = []
            if let ours { out = model.localIndexChanged(sequence: ours.sequence, digest: Self.modelDigest(ours)) }
            return out + model.tick(now: .now, still: ours != nil)
        })
    }
}
