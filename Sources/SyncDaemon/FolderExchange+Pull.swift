@preconcurrency import Crypto
import Foundation
import Logging
import SyncCore
import SyncFS
import SyncReplication
import SyncSecurity
import SyncStore
import SyncWire

/// Chunk requests over the folder's sessions: what a `ChunkPull` (the shell of
/// `SyncReplication.PullPlanner`) needs of them, and their answers.
extension FolderExchange {
    /// How long to wait for a chunk from `peer` before asking the next one: eight round trips
    /// (a window of requests queues behind one another), at least 2 s, `requestTimeout` while the
    /// round trip is unknown.
    func requestTimeout(for peer: ShortDeviceID) -> TimeInterval {
        guard let rtt = rtt?(peer) else { return Self.requestTimeout }
        let seconds = Double(rtt.components.seconds) + Double(rtt.components.attoseconds) / 1e18
        return min(Self.requestTimeout, max(2, 8 * seconds))
    }

    /// A request to `peer` timed out while another peer could serve: fail its other requests now
    /// (their stagers ask the others at once, instead of one timeout per chunk in turn) and leave
    /// it out of the pull's sources for `stallPause` seconds, or until it answers anything.
    func stall(_ peer: ShortDeviceID) {
        let orphaned: [PendingRequest] = lock.withLock {
            guard links.values.contains(where: { $0.device.short != peer && $0.access != nil }) else { return [] }
            stalled[peer] = .now() + Self.stallPause
            let gone = pending.filter { $0.value.peer == peer }
            for id in gone.keys { pending[id] = nil }
            return Array(gone.values)
        }
        for p in orphaned { p.complete(nil) }
    }

    /// A pull over this folder's sessions (nil without a chunk-id key: a storage secret).
    func chunkPull(announcer: ShortDeviceID, syncEach: Bool) -> ChunkPull? {
        guard let ids else { return nil }
        let env = ChunkPull.Environment(
            folder: folder, ids: ids, zeros: zeros,
            locate: { [self] wanted in
                ((try? store.locateChunks(wanted, folder: record.id)) ?? [:]).mapValues { ($0.path, $0.offset) }
            },
            peers: { [self] in sources() },
            announced: { [self] in announcedPeers?() ?? [] },
            request: { [self] peer, chunk, answer in
                guard let link = lock.withLock({ links[peer] }) else { return answer(.lost) }
                let p = PendingRequest()
                p.onDone = {
                    guard let data = p.bytes else { return answer(p.refusedByPeer ? .refused : .lost) }
                    if let rawSize = p.rawSize { return answer(.deflated(rawSize: Int(rawSize), data)) }
                    answer(.bytes(data))
                }
                send(p, for: chunk, to: link)
            },
            open: { [self] peer, data in
                guard let link = lock.withLock({ links[peer] }) else { return nil }
                return opened(data, from: link, ids: ids)
            },
            staged: { [self] id, path, offset in
                if let due = swarm.staged(id, path: path, offset: offset) { announce(due) }
            },
            unstage: { [self] ids in swarm.unstage(ids) },
            flushAnnouncements: { [self] in announce(swarm.takeUnsent()) },
            listen: { [self] listener in swarm.listen(listener) },
            recent: { [self] peer in swarm.recent(peer) },
            timeout: { [self] peer in requestTimeout(for: peer) },
            stall: { [self] peer in stall(peer) })
        return ChunkPull(env, announcer: announcer, syncEach: syncEach)
    }

    /// Peers to fetch from: every connected peer that can serve plaintext or (storage) sealed
    /// chunks we can open, but those that stalled lately, unless no other is left.
    func sources() -> [ShortDeviceID] {
        let now = DispatchTime.now()
        return lock.withLock {
            let all = links.values.filter { $0.access != nil }.map(\.device.short)
            let live = all.filter { (stalled[$0] ?? now) <= now }
            return (live.isEmpty ? all : live).sorted()
        }
    }

    /// Plaintext of what a peer sent: storage peers send sealed chunks (signature checked, then
    /// decrypted and unpadded); nil if it does not open.
    func opened(_ data: [UInt8], from source: PeerLink, ids: ChunkHasher) -> [UInt8]? {
        guard lock.withLock({ source.access == .storage }) else { return data }
        guard let chunkKey = keys.chunkKey, let sealed = try? SealedChunk(decoding: data) else { return nil }
        return try? sealed.open(chunkKey: chunkKey, ids: ids, folderKey: folderKey)
    }

    /// A chunk's bytes from a local file that has it, verified (the file may have changed).
    func localChunk(_ chunk: ChunkRef) -> [UInt8]? {
        let location = (try? store.locateChunk(chunk.id, folder: record.id)) ?? nil
        guard let ids, let at = location, let data = folder.read(at.path, offset: at.offset, count: Int(chunk.size)),
              ids.chunkID(data) == chunk.id else { return nil }
        return data
    }

    func send(_ p: PendingRequest, for chunk: ChunkRef, to link: PeerLink) {
        let id: UInt32? = lock.withLock {
            guard links[link.device.short] === link else { return nil }   // that session has ended
            p.peer = link.device.short
            nextRequest &+= 1
            pending[nextRequest] = p
            return nextRequest
        }
        guard let id else { return p.complete(nil) }
        link.send(.request(id: id, chunk: chunk.id, size: chunk.size))
    }

    /// The answer of `peer` to request `id`; an answer to a request made of another peer is
    /// dropped (request ids are sequential: a hostile peer could otherwise refuse chunks for the
    /// peer that has them, and make a change look superseded).
    /// `deflatedFrom`: the chunk's size when `bytes` are raw deflate (a `dataDeflated` answer).
    func complete(_ id: UInt32, _ bytes: [UInt8]?, refusedByPeer: Bool = false, deflatedFrom rawSize: UInt32? = nil,
                  from peer: ShortDeviceID) {
        guard let p = lock.withLock({ () -> PendingRequest? in
            counters.bytesIn += Int64(bytes?.count ?? 0)
            counters.chunkBytesIn += rawSize.map(Int64.init) ?? Int64(bytes?.count ?? 0)
            guard pending[id]?.peer == peer else { return nil }
            let p = pending.removeValue(forKey: id)
            if let p { stalled[p.peer] = nil }   // it answers again
            return p
        }) else { return }
        p.complete(bytes, refusedByPeer: refusedByPeer, deflatedFrom: rawSize)
    }
}


