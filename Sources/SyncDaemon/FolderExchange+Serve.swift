@preconcurrency import Crypto
import Foundation
import Logging
import SyncCompression
import SyncCore
import SyncFS
import SyncReplication
import SyncSecurity
import SyncStore
import SyncWire

/// What this folder gives its peers (Protocol/wire.md, "Replication" 2–3, "Storage peers"): our
/// index as sealed manifests (long chunk lists as pieces), chunks and pieces on request, sealed
/// chunks pushed to and kept for storage peers, and stored manifests relayed.
extension FolderExchange {
    /// A manifest of ours for `peer`: sealed (long chunk lists as pieces), chunks pushed first to
    /// a storage peer, then sent.
    func sendManifest(_ batch: FolderModel.Batch, to peer: ShortDeviceID) {
        guard let link = lock.withLock({ links[peer] }) else { return }
        let (listed, pieces) = withPieces(batch.entries)
        guard let manifest = try? SealedManifest.seal(listed, origin: me, indexID: indexID, keys: manifestKeys,
                                                      sequences: (batch.firstSequence, batch.lastSequence)) else { return }
        if link.access == .storage { storeChunks(of: batch.entries, pieces: pieces, on: link) }
        let bytes = manifest.encoded
        lock.withLock { counters.bytesOut += Int64(bytes.count) }
        link.send(.index(bytes))
    }

    /// Storage peers: send a peer every stored manifest of other origins that it does not hold
    /// yet, oldest first (writer A offline, B still gets A's data from here).
    func relayStoredManifests(to link: PeerLink) {
        guard lock.withLock({ () -> Bool in defer { link.relayed = true }; return !link.relayed }) else { return }
        pushQueue.async { [self] in
            let floors = lock.withLock { link.floors }
            for m in (try? store.remoteManifests(folder: record.id)) ?? [] where m.origin != link.device.short {
                if let f = floors[m.origin], f.indexID == m.indexID, f.sequence >= m.lastSequence { continue }
                lock.withLock { counters.bytesOut += Int64(m.sealed.count) }
                link.send(.index(m.sealed))
            }
        }
    }

    /// The entries as a manifest carries them: a chunk list longer than `ChunkListPieces.inlineLimit`
    /// goes as pieces, which are kept in the index so peers can fetch them. Also returns the pieces.
    func withPieces(_ entries: [FileEntry]) -> ([ManifestEntry], [ChunkID: [UInt8]]) {
        guard let ids else { return (entries.map { ManifestEntry($0) }, [:]) }
        var pieces: [ChunkID: [UInt8]] = [:]
        let listed = entries.map { e -> ManifestEntry in
            guard e.chunks.count > ChunkListPieces.inlineLimit else { return ManifestEntry(e) }
            let split = ChunkListPieces.split(e.chunks, ids: ids)
            for p in split { pieces[p.ref.id] = p.bytes }
            return ManifestEntry(e, pieces: split.map(\.ref))
        }
        do { try store.storePieces(pieces.map { ($0.key, $0.value) }, folder: record.id) } catch {
            // Without them stored, peers could not fetch them: send the lists inline instead.
            logger.warning("cannot keep chunk-list pieces: \(error)")
            return (entries.map { ManifestEntry($0) }, [:])
        }
        return (listed, pieces)
    }

    /// Pieces no live file's list is made of any more (older versions of big files) are dropped
    /// at start-up: pieces are derived from the lists, so the ones in use are recomputed.
    func prunePieces() {
        guard let ids else { return }
        do {
            var keep: Set<ChunkID> = []
            for list in try store.chunkLists(folder: record.id, longerThan: ChunkListPieces.inlineLimit) {
                for piece in ChunkListPieces.split(list, ids: ids) { keep.insert(piece.ref.id) }
            }
            let dropped = try store.prunePieces(keeping: keep, folder: record.id)
            if dropped > 0 { logger.info("dropped \(dropped) chunk-list pieces no file uses") }
        } catch {
            logger.warning("cannot prune chunk-list pieces: \(error)")
        }
    }

    /// Sealed copies of the chunks (and chunk-list pieces) of `entries` for a storage peer, each
    /// sent once per session.
    func storeChunks(of entries: [FileEntry], pieces: [ChunkID: [UInt8]], on link: PeerLink) {
        guard let chunkKey = keys.chunkKey, let signer = keys.signingKey else { return }
        func push(_ id: ChunkID, _ data: @autoclosure () -> [UInt8]?) {
            guard lock.withLock({ link.storedChunks.insert(id).inserted }), let data = data(),
                  let sealed = try? SealedChunk.seal(data, id: id, chunkKey: chunkKey, signer: signer) else { return }
            let bytes = sealed.encoded
            lock.withLock { counters.bytesOut += Int64(bytes.count) }
            link.send(.store(bytes))
        }
        for (id, bytes) in pieces { push(id, bytes) }
        for e in entries where !e.deleted && e.metadata.kind == .file {
            for c in e.chunks { push(c.id, localChunk(c)) }
        }
    }

    /// A chunk for a peer: plaintext from our files (read-write and read-only) — deflated when the
    /// session agreed to it (`deflate`) and it pays — or a sealed chunk from the sealed store
    /// (storage: sealed chunks are encrypted, so they never deflate and go as they are).
    func serve(id: UInt32, chunk: ChunkID, size: UInt32, deflate: Bool = false) -> SessionMessage {
        if keys.manifestKey == nil {
            if let bytes = sealed.read(chunk) { return .data(id: id, bytes: bytes) }
            return .requestFailed(id: id, reason: 1)
        }
        // No HMAC here: the receiver verifies every chunk, and a stale read just fails there.
        // Not in a file: perhaps received by a pull of ours and staged (swarm), or a piece of a
        // chunk list.
        guard let data = (try? store.locateChunk(chunk, folder: record.id)).flatMap({ $0 })
                .flatMap({ folder.read($0.path, offset: $0.offset, count: Int(size)) })
                ?? stagedChunk(chunk, size: size)
                ?? (try? store.pieces([chunk], folder: record.id))?[chunk] else {
            return .requestFailed(id: id, reason: 1)
        }
        if deflate, let packed = ChunkDeflate.deflateIfItPays(data) {
            lock.withLock { counters.bytesOut += Int64(packed.count) }
            return .dataDeflated(id: id, rawSize: UInt32(data.count), bytes: packed)
        }
        lock.withLock { counters.bytesOut += Int64(data.count) }
        return .data(id: id, bytes: data)
    }

    /// A sealed chunk for safekeeping: checked against the folder signature, then written atomically.
    func keep(_ bytes: [UInt8]) -> Outcome {
        let chunk: SealedChunk
        do { chunk = try SealedChunk(decoding: bytes) } catch { return .refuse("malformed sealed chunk: \(error)") }
        do { try chunk.verify(folderKey: folderKey) } catch { return .refuse("refused sealed chunk: \(error)") }
        do { try sealed.write(chunk.id, bytes) } catch { return .refuse("cannot store sealed chunk: \(error)") }
        return .reply([])
    }
}
