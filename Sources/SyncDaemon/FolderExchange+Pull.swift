@preconcurrency import Crypto
import Foundation
import Logging
import SyncCore
import SyncFS
import SyncReplication
import SyncSecurity
import SyncStore
import SyncWire

/// Getting chunks and chunk-list pieces: `ChunkPull` carries out `SyncReplication.PullPlanner`
/// over the folder's sessions; this file gives it what it needs and stages a batch with it.
extension FolderExchange {
    /// Stages every file of the batch (the chunks of all of them scheduled together, so a batch of
    /// 1,000 small files costs a few round trips and a big file streams from every peer). Renames
    /// of a local file are staged as a hard link. Returns the steps (by index) that could not be
    /// staged, with the reason; the others are staged whatever happens to those.
    func stageAll(_ steps: inout [Step], from link: PeerLink, clock: inout StageClock) throws -> [Int: Error] {
        let syncEach = Self.syncsEachFile(steps)
        let workers = 4
        let dirs = try (0..<workers).map(stagingDirectory)
        var jobs: [ChunkPull.Job] = []
        for (i, step) in steps.enumerated() {
            let entry: FileEntry
            switch step {
            case .file(let e, _), .conflictCopy(let e, _, _): entry = e
            default: continue
            }
            // Spread over a few directories: creating a file holds its directory's lock (on this
            // test machine's ext4 the wait was a fifth of the receiver's CPU in the `small` benchmark).
            let temp = dirs[i % workers] + "/pull-\(UInt64.random(in: 0...UInt64.max))"
            if let source = renames[entry.path], linkRenamed(source, to: temp, syncEach: syncEach) {
                steps[i] = steps[i].staged(at: temp)
                continue
            }
            jobs.append(.init(key: i, chunks: entry.chunks, destination: .file(temp, entry.metadata)))
        }
        clock.lap("plan pulls")
        guard let pull = chunkPull(announcer: link.device.short, syncEach: syncEach) else {
            return Dictionary(uniqueKeysWithValues: jobs.map { ($0.key, PullError(description: "no chunk-id key") as Error) })
        }
        let outcome = pull.run(jobs)
        for job in jobs where outcome.done.contains(job.key) { steps[job.key] = steps[job.key].staged(at: job.temp!) }
        return outcome.failures
    }

    struct PullError: Error, CustomStringConvertible {
        let description: String
        /// The peer that announced this version answered that it no longer has the chunk (its file
        /// changed again), and nobody else had it: a newer version of the path is on its way.
        var gone = false
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
            request: { [self] peer, chunk, answer in
                guard let link = lock.withLock({ links[peer] }) else { return answer(.lost) }
                let p = PendingRequest()
                p.onDone = { [self] in
                    guard let data = p.bytes else { return answer(p.refusedByPeer ? .refused : .lost) }
                    guard let plain = opened(data, from: link, ids: ids) else { return answer(.bad) }
                    answer(.bytes(plain))
                }
                send(p, for: chunk, to: link)
            },
            timeout: { [self] peer in requestTimeout(for: peer) },
            stall: { [self] peer in stall(peer) })
        return ChunkPull(env, announcer: announcer, syncEach: syncEach)
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

    /// Where staging worker `k` writes: `.syncd/tmp/<k>`.
    func stagingDirectory(_ worker: Int) throws -> String {
        let dir = ".syncd/tmp/\(worker)"
        do { try folder.makeDirectory(dir, mode: 0o700) } catch let e as FileSystemError where e.errno == EEXIST {}
        return dir
    }

    /// Staged files a crash left behind (never renamed into place) are thrown away at start-up.
    func clearStaging() {
        try? folder.removeTree(".syncd/tmp")
    }

    /// The entries with their full chunk lists: pieces this folder holds are read from the index,
    /// the rest fetched like chunks (one pull), verified against their keyed ids, and kept.
    func resolvePieces(_ listed: [ManifestEntry], from link: PeerLink) throws -> [FileEntry] {
        let refs = listed.flatMap { $0.pieces ?? [] }
        guard !refs.isEmpty else { return listed.map(\.entry) }
        guard let pull = chunkPull(announcer: link.device.short, syncEach: false) else { throw PullError(description: "no chunk-id key") }
        var have = try store.pieces(refs.map(\.id), folder: record.id)
        var missing: [ChunkListPieces.Ref] = []
        var seen: Set<ChunkID> = []
        for r in refs where have[r.id] == nil && seen.insert(r.id).inserted { missing.append(r) }
        if !missing.isEmpty {
            let outcome = pull.run(missing.enumerated().map { .init(key: $0, chunks: [$1.chunk], destination: .memory) })
            if let (i, error) = outcome.failures.min(by: { $0.key < $1.key }) {
                throw PullError(description: "chunk-list piece \(missing[i].id) did not arrive: \(error)")
            }
            let fetched = missing.enumerated().map { i, r in (id: r.id, bytes: outcome.memory[i] ?? []) }
            for f in fetched { have[f.id] = f.bytes }
            try store.storePieces(fetched, folder: record.id)
        }
        return try listed.map { m in
            try m.resolved(with: (m.pieces ?? []).map { r in try ChunkListPieces.decode(have[r.id] ?? [], as: r) })
        }
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


extension FolderPlacer.Step {
    /// A file or conflict copy whose content is now staged at `temp`.
    func staged(at temp: String) -> Self {
        switch self {
        case .file(let e, _): .file(e, staged: temp)
        case .conflictCopy(let e, _, let name): .conflictCopy(e, staged: temp, name: name)
        default: self
        }
    }
}
