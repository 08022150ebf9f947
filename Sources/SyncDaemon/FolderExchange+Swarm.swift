import Foundation
import SyncCore
import SyncFS
import SyncWire

/// Swarm (Protocol/wire.md, "Swarm"): receivers of the same new data serve each other. A chunk our
/// pull has received and written to its staged file is servable from there at once, and announced
/// to our other peers in `have` messages; what peers announce goes to our running pulls, whose
/// planner asks them for it before the writer (`SyncReplication.PullPlanner.peerAnnounced`).
extension FolderExchange {
    /// The swarm's bookkeeping for one folder (thread-safe).
    final class SwarmBook: @unchecked Sendable {
        /// Chunks announced by each peer that a pull starting later may still need, at most this
        /// many per peer (the oldest are forgotten).
        static let recentPerPeer = 1 << 16
        /// Announcements are sent once this many are waiting, or at a pull's next tick.
        static let flushAt = 16

        private let lock = Lock()
        private var staged: [ChunkID: (path: String, offset: Int64)] = [:]
        private var unsent: [ChunkID] = []
        private var recent: [ShortDeviceID: (set: Set<ChunkID>, order: [ChunkID])] = [:]
        private var listeners: [UInt64: @Sendable (ShortDeviceID, [ChunkID]) -> Void] = [:]
        private var nextListener: UInt64 = 0

        /// Where a chunk a pull received is staged (folder-relative path, offset), if it is.
        func location(_ id: ChunkID) -> (path: String, offset: Int64)? { lock.withLock { staged[id] } }

        /// A pull wrote verified `id` at `offset` of staged file `path`; returns the announcements
        /// due now (nil while fewer than `flushAt` wait).
        func staged(_ id: ChunkID, path: String, offset: Int64) -> [ChunkID]? {
            lock.withLock {
                guard staged[id] == nil else { return nil }
                staged[id] = (path, offset)
                unsent.append(id)
                guard unsent.count >= Self.flushAt else { return nil }
                defer { unsent = [] }
                return unsent
            }
        }

        /// The announcements waiting.
        func takeUnsent() -> [ChunkID] { lock.withLock { defer { unsent = [] }; return unsent } }

        /// The pull is over: its staged files are placed or removed.
        func unstage(_ ids: [ChunkID]) { lock.withLock { for id in ids { staged[id] = nil } } }

        /// `peer` announced `ids`: remembered (bounded) and told to every running pull.
        func announced(_ ids: [ChunkID], by peer: ShortDeviceID) {
            let tell: [@Sendable (ShortDeviceID, [ChunkID]) -> Void] = lock.withLock {
                var r = recent[peer] ?? ([], [])
                for id in ids where r.set.insert(id).inserted { r.order.append(id) }
                if r.order.count > Self.recentPerPeer {
                    let drop = r.order.count - Self.recentPerPeer
                    for id in r.order[..<drop] { r.set.remove(id) }
                    r.order.removeFirst(drop)
                }
                recent[peer] = r
                return Array(listeners.values)
            }
            for listener in tell { listener(peer, ids) }
        }

        /// What `peer` announced lately.
        func recent(_ peer: ShortDeviceID) -> [ChunkID] { lock.withLock { recent[peer]?.order ?? [] } }

        /// The peer's session ended: what it announced is no longer known to be servable.
        func forget(_ peer: ShortDeviceID) { _ = lock.withLock { recent.removeValue(forKey: peer) } }

        /// Calls `listener` with every announcement until the returned function is called.
        func listen(_ listener: @escaping @Sendable (ShortDeviceID, [ChunkID]) -> Void) -> @Sendable () -> Void {
            let key: UInt64 = lock.withLock { nextListener += 1; listeners[nextListener] = listener; return nextListener }
            return { [self] in _ = lock.withLock { listeners.removeValue(forKey: key) } }
        }
    }

    /// A `have` message: only read-write and read-only peers pull plaintext chunks to announce.
    func received(have ids: [ChunkID], from link: PeerLink) -> Outcome {
        let access = lock.withLock { link.access }
        guard access == .readWrite || access == .readOnly else { return .reply([]) }
        swarm.announced(ids, by: link.device.short)
        return .reply([])
    }

    /// Sends `ids` in `have` messages to every read-write and read-only peer.
    func announce(_ ids: [ChunkID]) {
        guard !ids.isEmpty else { return }
        let to = lock.withLock { links.values.filter { $0.access == .readWrite || $0.access == .readOnly } }
        for start in stride(from: 0, to: ids.count, by: SessionMessage.maxHave) {
            let message = SessionMessage.have(Array(ids[start..<min(start + SessionMessage.maxHave, ids.count)]))
            for link in to { link.send(message) }
        }
    }

    /// A staged chunk's bytes for a peer's request (nil if the staged file is gone or changed:
    /// the requester verifies every chunk).
    func stagedChunk(_ id: ChunkID, size: UInt32) -> [UInt8]? {
        guard let at = swarm.location(id) else { return nil }
        return folder.read(at.path, offset: at.offset, count: Int(size))
    }
}
