@preconcurrency import Crypto
import Foundation
import Logging
import SyncCore
import SyncFS
import SyncReplication
import SyncSecurity
import SyncStore
import SyncWire

/// Getting chunks and chunk-list pieces: local copies first, then requests spread over the
/// connected peers (small files' chunks requested ahead), verified, staged under `.syncd/tmp/`.
extension FolderExchange {
    /// A big pull right after start-up (a newcomer's first sync) should spread over every peer,
    /// not only the first one whose session came up: wait up to a second for the sessions to
    /// the other peers that announce the folder.
    func waitForAnnouncedPeers(before steps: [Step]) {
        let bytes = steps.reduce(Int64(0)) { total, step in
            switch step {
            case .file(let e, _), .conflictCopy(let e, _, _): total + e.metadata.size
            default: total
            }
        }
        guard bytes > 8 << 20, let announced = announcedPeers else { return }
        let deadline = DispatchTime.now() + 1
        while DispatchTime.now() < deadline {
            let connected = lock.withLock { Set(links.values.filter { $0.access != nil }.map(\.device.short)) }
            if announced().isSubset(of: connected) { return }
            Thread.sleep(forTimeInterval: 0.05)
        }
    }

    static let prefetchWindow = 256
    static let prefetchBudget = 64 << 20

    /// Small files cost a round trip each when staged one by one; instead, request the chunks of
    /// every small file of the batch ahead (up to `prefetchWindow` in flight, `prefetchBudget`
    /// bytes in all) from a helper thread, while the stagers write the files whose chunks are in:
    /// a batch of 1,000 × 4 KiB files costs a few round trips, and fetching overlaps writing.
    /// Returns a function that stops the helper.
    func prefetchSmallFiles(_ entries: [FileEntry], from link: PeerLink) -> @Sendable () -> Void {
        // One read for where every chunk of the batch already is locally (renames, copies).
        let all = entries.flatMap(\.chunks).map(\.id)
        knownLocations = (try? store.locateChunks(all, folder: record.id)) ?? [:]
        var wanted: [(ChunkRef, PendingRequest)] = []
        var bytes = 0
        for e in entries where e.metadata.size <= 1 << 20 {
            for c in e.chunks where prefetched[c.id] == nil && knownLocations?[c.id] == nil && !(ids.map { isZeroChunk(c, $0) } ?? false) {
                guard bytes + Int(c.size) <= Self.prefetchBudget else { break }
                bytes += Int(c.size)
                let p = PendingRequest()
                prefetched[c.id] = p
                wanted.append((c, p))
            }
        }
        guard !wanted.isEmpty else { return {} }
        let stop = Flag(), window = Slots(Self.prefetchWindow), order = wanted
        DispatchQueue.global().async { [self] in
            for (chunk, p) in order {
                // A peer that stopped answering: the stagers ask again, and other peers.
                guard window.acquire(timeout: Self.requestTimeout), !stop.isRaised else { return }
                p.onDone = { window.release() }
                send(p, for: chunk, to: link)
            }
        }
        return { stop.raise() }
    }

    /// Stages every file of the batch, four at a time: while one file waits for its chunks the
    /// others are verified and written, and file creation (a kernel cost that dominates small
    /// files) runs in parallel in four directories. Returns the steps (by index) that could not
    /// be staged, with the reason; the others are staged whatever happens to those.
    func stageAll(_ steps: inout [Step], from link: PeerLink, clock: inout StageClock) throws -> [Int: Error] {
        let jobs = steps.indices.filter { i in
            switch steps[i] {
            case .file, .conflictCopy: true
            default: false
            }
        }
        guard !jobs.isEmpty else { return [:] }
        let snapshot = steps
        let stopPrefetch = prefetchSmallFiles(jobs.compactMap { i -> FileEntry? in
            switch snapshot[i] {
            case .file(let e, _), .conflictCopy(let e, _, _): e
            default: nil
            }
        }, from: link)
        clock.lap("plan pulls")
        defer { stopPrefetch(); prefetched = [:]; knownLocations = nil }
        struct Results { var staged: [Int: String] = [:], failures: [Int: Error] = [:], next = 0 }
        let results = Locked(Results())
        let workers = min(4, jobs.count), syncEach = Self.syncsEachFile(steps)
        let dirs = try (0..<workers).map(stagingDirectory)
        DispatchQueue.concurrentPerform(iterations: workers) { worker in
            while true {
                let job: Int? = results.withLock { r in
                    // A full disk fails every later file too: stop at the first one.
                    guard !r.failures.values.contains(where: { "\($0)" == "disk full" }), r.next < jobs.count else { return nil }
                    defer { r.next += 1 }
                    return jobs[r.next]
                }
                guard let i = job else { return }
                let entry: FileEntry
                switch snapshot[i] {
                case .file(let e, _), .conflictCopy(let e, _, _): entry = e
                default: continue
                }
                do {
                    let path = try stage(entry, in: dirs[worker], from: link, syncEach: syncEach)
                    results.withLock { $0.staged[i] = path }
                } catch {
                    results.withLock { $0.failures[i] = error }
                }
            }
        }
        let (staged, failures) = results.withLock { ($0.staged, $0.failures) }
        for (i, path) in staged {
            switch steps[i] {
            case .file(let e, _): steps[i] = .file(e, staged: path)
            case .conflictCopy(let e, _, let name): steps[i] = .conflictCopy(e, staged: path, name: name)
            default: break
            }
        }
        return failures
    }

    struct PullError: Error, CustomStringConvertible {
        let description: String
        /// The peer that announced this version answered that it no longer has the chunk (its file
        /// changed again), and nobody else had it: a newer version of the path is on its way.
        var gone = false
    }

    /// Whether `link` answers right away that it does not have `chunk` (rather than not answering).
    func refuses(_ chunk: ChunkRef, _ link: PeerLink) -> Bool {
        let p = request(chunk, from: link)
        return p.wait(requestTimeout(for: link.device.short)) && p.refusedByPeer
    }

    /// A rename staged without copying: a hard link to the local file, if that file is still
    /// exactly what the index says (same size, mtime, inode…; mode and mtime already match the
    /// entry, so the shared inode is not touched).
    func linkRenamed(_ source: FileEntry, to temp: String, syncEach: Bool) -> Bool {
        guard let disk = try? folder.metadata(source.path), disk.kind == .file, disk.looksUnchanged(from: source.metadata),
              (try? folder.link(source.path, to: temp)) != nil else { return false }
        if syncEach && (try? folder.synchronize(temp)) == nil { try? folder.remove(temp); return false }
        return true
    }

    /// Where staging worker `k` writes: one directory per worker, because creating a file holds
    /// its directory's lock — two workers in one directory wait on each other (on this test
    /// machine's ext4 the wait was a fifth of the receiver's CPU in the `small` benchmark).
    func stagingDirectory(_ worker: Int) throws -> String {
        let dir = ".syncd/tmp/\(worker)"
        do { try folder.makeDirectory(dir, mode: 0o700) } catch let e as FileSystemError where e.errno == EEXIST {}
        return dir
    }

    /// Staged files a crash left behind (never renamed into place) are thrown away at start-up.
    func clearStaging() {
        try? folder.removeTree(".syncd/tmp")
    }

    /// Writes `entry`'s content to a new temp file in `dir` (under `.syncd/tmp/`): chunks found in
    /// local files are copied, the rest requested from `link`, up to `requestWindow` at a time;
    /// every chunk is checked against its keyed id. A chunk of zeros is neither fetched nor
    /// written: it stays a hole, so sparse files arrive sparse. Mode and mtime are set (and
    /// checked) on the open file. Returns the temp path (relative to the folder).
    func stage(_ entry: FileEntry, in dir: String, from link: PeerLink, syncEach: Bool) throws -> String {
        guard let ids else { throw PullError(description: "no chunk-id key") }
        let temp = dir + "/pull-\(UInt64.random(in: 0...UInt64.max))"
        if let source = renames[entry.path], linkRenamed(source, to: temp, syncEach: syncEach) { return temp }
        let file = try folder.createFile(temp, mode: 0o600)
        var ok = false
        defer {
            file.close()
            if !ok { try? folder.remove(temp) }
        }
        var requested: [Int: (PendingRequest, PeerLink)] = [:]
        var nextToRequest = 0
        var offset: Int64 = 0
        var local: [Int: [UInt8]] = [:]
        var flushedTo: Int64 = 0
        for (i, chunk) in entry.chunks.enumerated() {
            while nextToRequest < entry.chunks.count && requested.count < Self.requestWindow && local.count < Self.requestWindow {
                let c = entry.chunks[nextToRequest]
                if prefetched[c.id] != nil || isZeroChunk(c, ids) {
                    // fetched ahead with the rest of the batch, or a hole
                } else if let bytes = localChunk(c) {
                    local[nextToRequest] = bytes
                } else {
                    // Spread over every connected peer (the sender first in turn), retried elsewhere below.
                    let sources = self.sources(preferring: link)
                    let source = sources[nextToRequest % sources.count]
                    requested[nextToRequest] = (request(c, from: source), source)
                }
                nextToRequest += 1
            }
            if prefetched[chunk.id] == nil && local[i] == nil && requested[i] == nil && isZeroChunk(chunk, ids) {
                offset += Int64(chunk.size)   // a hole: the final truncate gives the file its size
                continue
            }
            var bytes = local.removeValue(forKey: i)
            if bytes == nil, let (p, source) = requested.removeValue(forKey: i) ?? prefetched[chunk.id].map({ ($0, link) }) {
                // Timed out, refused or unreadable: ask the other peers, one at a time.
                bytes = receive(p, from: source, chunk) ?? fetch(chunk, preferring: link, skipping: source)
                if bytes == nil {
                    throw PullError(description: "chunk \(chunk.id) did not arrive from any peer", gone: refuses(chunk, link))
                }
            }
            guard let data = bytes, data.count == Int(chunk.size), ids.chunkID(data) == chunk.id else {
                throw PullError(description: "chunk \(chunk.id) failed verification")
            }
            if noteIfZero(data, chunk) {
                offset += Int64(data.count)   // a hole, like the zero chunks never fetched
                continue
            }
            do { try data.withUnsafeBytes { try file.write($0, at: offset) } } catch let e as FileSystemError {
                throw e.errno == ENOSPC || e.errno == EDQUOT ? PullError(description: "disk full") : e
            }
            offset += Int64(data.count)
            // Write-behind: start writing each 8 MiB to disk now, so the batch's final syncfs finds
            // little left to do and the disk works while the network does.
            if offset - flushedTo >= 8 << 20 {
                file.startWriteBack(offset: flushedTo, count: offset - flushedTo)
                flushedTo = offset
            }
        }
        try file.truncate(offset)
        try file.setMode(entry.metadata.mode & 0o7777)
        try file.setModificationTime(entry.metadata.mtimeNs)
        if syncEach {
            do { try file.synchronize() } catch let e as FileSystemError where e.errno == ENOSPC || e.errno == EDQUOT {
                throw PullError(description: "disk full")
            }
        }
        ok = true
        return temp
    }

    /// Whether `chunk` is known to be all zeros without fetching it: its keyed id is that of a
    /// run of zeros of its size. FastCDC cuts a run of zeros into chunks of its maximum size, so
    /// that one size is hashed (once); the id of another size is checked only once a verified
    /// chunk of that size turned out all zeros (`noteIfZero`) — hashing zeros for every size
    /// would double the receiver's hashing.
    func isZeroChunk(_ chunk: ChunkRef, _ ids: ChunkHasher) -> Bool {
        if let id = lock.withLock({ zeroChunkIDs[chunk.size] }) { return id == chunk.id }
        guard Int(chunk.size) == FastCDC.Parameters.default.maxSize else { return false }
        let id = ids.chunkID([UInt8](repeating: 0, count: Int(chunk.size)))
        lock.withLock { zeroChunkIDs[chunk.size] = id }
        return id == chunk.id
    }

    /// Whether verified chunk bytes are all zeros (written as a hole); remembers the id.
    func noteIfZero(_ data: [UInt8], _ chunk: ChunkRef) -> Bool {
        guard data.withUnsafeBytes({ raw in raw.allSatisfy { $0 == 0 } }) else { return false }
        lock.withLock { zeroChunkIDs[chunk.size] = chunk.id }
        return true
    }

    /// The entries with their full chunk lists: pieces this folder holds are read from the index,
    /// the rest requested from the peers (all at once, then one by one from the next peer for any
    /// that failed), verified against their keyed ids, and kept.
    func resolvePieces(_ listed: [ManifestEntry], from link: PeerLink) throws -> [FileEntry] {
        let refs = listed.flatMap { $0.pieces ?? [] }
        guard !refs.isEmpty else { return listed.map(\.entry) }
        guard ids != nil else { throw PullError(description: "no chunk-id key") }
        var have = try store.pieces(refs.map(\.id), folder: record.id)
        var missing: [ChunkListPieces.Ref] = []
        var seen: Set<ChunkID> = []
        for r in refs where have[r.id] == nil && seen.insert(r.id).inserted { missing.append(r) }
        if !missing.isEmpty {
            let sources = self.sources(preferring: link)
            let asked = missing.enumerated().map { i, r in
                let source = sources[i % sources.count]
                return (r, request(r.chunk, from: source), source)
            }
            var fetched: [(id: ChunkID, bytes: [UInt8])] = []
            for (ref, p, source) in asked {
                guard let piece = receive(p, from: source, ref.chunk) ?? fetch(ref.chunk, preferring: link, skipping: source) else { throw PullError(description: "chunk-list piece \(ref.id) did not arrive from any peer") }
                fetched.append((ref.id, piece))
                have[ref.id] = piece
            }
            try store.storePieces(fetched, folder: record.id)
        }
        return try listed.map { m in
            try m.resolved(with: (m.pieces ?? []).map { r in try ChunkListPieces.decode(have[r.id] ?? [], as: r) })
        }
    }

    /// One chunk from the first peer (other than `skipping`) that serves it intact, asking one at a time.
    func fetch(_ chunk: ChunkRef, preferring link: PeerLink, skipping: PeerLink? = nil) -> [UInt8]? {
        for source in sources(preferring: link) where source !== skipping {
            if let plain = receive(request(chunk, from: source), from: source, chunk) { return plain }
        }
        return nil
    }

    /// Waits for the answer to a request: the chunk's plaintext if it arrived, opens (storage
    /// peers send sealed chunks) and matches its keyed id; nil if it timed out, was refused or is wrong.
    func receive(_ p: PendingRequest, from source: PeerLink, _ chunk: ChunkRef) -> [UInt8]? {
        guard let ids else { return nil }
        guard p.wait(requestTimeout(for: source.device.short)) else { stall(source.device.short); return nil }
        guard let data = p.bytes else { return nil }
        guard let plain = opened(data, from: source, ids: ids), plain.count == Int(chunk.size), ids.chunkID(plain) == chunk.id else { return nil }
        return plain
    }

    /// Peers to fetch from: `link` first, then every other connected peer that can serve plaintext
    /// or (storage) sealed chunks we can open.
    func sources(preferring link: PeerLink) -> [PeerLink] {
        let now = DispatchTime.now()
        let (others, quiet) = lock.withLock { () -> ([PeerLink], Set<ShortDeviceID>) in
            (links.values.filter { $0 !== link && $0.access != nil }, Set(stalled.filter { $0.value > now }.keys))
        }
        let all = [link] + others.sorted { $0.device.short < $1.device.short }
        let live = all.filter { !quiet.contains($0.device.short) }
        return live.isEmpty ? all : live
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
        let location = knownLocations.map { $0[chunk.id] } ?? ((try? store.locateChunk(chunk.id, folder: record.id)) ?? nil)
        guard let ids, let at = location, let data = folder.read(at.path, offset: at.offset, count: Int(chunk.size)),
              ids.chunkID(data) == chunk.id else { return nil }
        return data
    }

    func request(_ chunk: ChunkRef, from link: PeerLink) -> PendingRequest {
        let p = PendingRequest()
        send(p, for: chunk, to: link)
        return p
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

    func complete(_ id: UInt32, _ bytes: [UInt8]?, refusedByPeer: Bool = false) {
        guard let p = lock.withLock({ () -> PendingRequest? in
            counters.bytesIn += Int64(bytes?.count ?? 0)
            let p = pending.removeValue(forKey: id)
            if let p { stalled[p.peer] = nil }   // it answers again
            return p
        }) else { return }
        p.complete(bytes, refusedByPeer: refusedByPeer)
    }
}

