@preconcurrency import Crypto
import Foundation
import Logging
import SyncCore
import SyncFS
import SyncSecurity
import SyncStore
import SyncWire

/// What one folder does with the messages of an established session: accept or refuse sealed
/// manifests (signature, folder, rollback/replay, entry paths), keep sealed chunks for storage
/// peers, answer chunk requests and pings. No sockets: the session shell hands it messages and
/// sends back what it returns.
final class FolderExchange: @unchecked Sendable {
    enum Outcome: Equatable {
        case reply([SessionMessage])
        /// Refuse and close the session; the reason is logged and told to the peer.
        case refuse(String)
    }

    let folderID: [UInt8]
    let access: AccessKind
    private let record: FolderRecord
    private let keys: FolderKeys
    private let manifestKeys: ManifestKeys
    private let folderKey: Curve25519.Signing.PublicKey
    private let store: IndexStore
    private let sealed: SealedChunkStore
    private let lock = Lock()
    private var guardState: ManifestGuard?

    init(record: FolderRecord, keys: FolderKeys, store: IndexStore) throws {
        self.record = record
        self.keys = keys
        self.folderID = keys.folderID
        self.access = keys.access
        self.store = store
        folderKey = try Curve25519.Signing.PublicKey(rawRepresentation: keys.folderPublicKey)
        manifestKeys = ManifestKeys(folderID: keys.folderID, publicKey: folderKey, manifestKey: keys.manifestKey,
                                    signingKey: keys.signingKey)
        sealed = SealedChunkStore(directory: record.path + "/.syncd/sealed")
    }

    var sessionPSK: [UInt8] { keys.sessionPSK }

    /// Our side's first message on a new session.
    func hello() -> SessionMessage {
        let access: SessionMessage.AccessByte = switch keys.access {
        case .readWrite: .readWrite
        case .readOnly: .readOnly
        case .storage: .storage
        }
        let sequence = (try? store.stats(folder: record.id).sequence) ?? 0
        return .hello(.init(access: access, indexID: 0, sequence: UInt64(max(sequence, 0))))
    }

    func handle(_ message: SessionMessage, from peer: DeviceID) -> Outcome {
        switch message {
        case .hello, .pong, .indexAck, .data, .requestFailed, .close:
            return .reply([])   // progress bookkeeping arrives with replication
        case .ping(let n):
            return .reply([.pong(n)])
        case .index(let bytes):
            return intake(bytes)
        case .store(let bytes):
            return keep(bytes)
        case let .request(id, chunk, _):
            if let bytes = sealed.read(chunk) { return .reply([.data(id: id, bytes: bytes)]) }
            return .reply([.requestFailed(id: id, reason: 1)])
        }
    }

    /// A sealed manifest: verified by everyone, opened by those who can, stored, acknowledged.
    private func intake(_ bytes: [UInt8]) -> Outcome {
        let manifest: SealedManifest
        do { manifest = try SealedManifest(decoding: bytes) } catch { return .refuse("malformed manifest: \(error)") }
        do { try manifest.verify(keys: manifestKeys) } catch { return .refuse("refused manifest: \(error)") }
        let header = manifest.header
        return lock.withLock { () -> Outcome in
            var guardState = loadGuard()
            switch guardState.admit(header) {
            case .accept: break
            case .duplicate, .rollback:
                let held = guardState.seen[header.origin]?.lastSequence ?? 0
                return .refuse("refused manifest: replayed or older than what we hold (origin \(String(header.origin, radix: 16)) "
                    + "sequence \(header.lastSequence) ≤ \(held))")
            }
            if keys.manifestKey != nil {
                do {
                    let entries = try manifest.open(keys: manifestKeys)
                    if let bad = entries.first(where: { RelativePath.validate($0.path) != nil }) {
                        return .refuse("refused manifest: invalid path \(bad.path.debugDescription)")
                    }
                } catch {
                    return .refuse("refused manifest: \(error)")
                }
            }
            do {
                try store.storeRemoteManifest(folder: record.id, origin: header.origin, indexID: header.indexID,
                                              firstSequence: header.firstSequence, lastSequence: header.lastSequence,
                                              sealed: bytes)
            } catch {
                return .refuse("cannot store manifest: \(error)")
            }
            guardState.record(header)
            self.guardState = guardState
            return .reply([.indexAck(origin: header.origin, indexID: header.indexID, sequence: header.lastSequence)])
        }
    }

    /// A sealed chunk for safekeeping: checked against the folder signature, then written atomically.
    private func keep(_ bytes: [UInt8]) -> Outcome {
        let chunk: SealedChunk
        do { chunk = try SealedChunk(decoding: bytes) } catch { return .refuse("malformed sealed chunk: \(error)") }
        do { try chunk.verify(folderKey: folderKey) } catch { return .refuse("refused sealed chunk: \(error)") }
        do { try sealed.write(chunk.id, bytes) } catch { return .refuse("cannot store sealed chunk: \(error)") }
        return .reply([])
    }

    private func loadGuard() -> ManifestGuard {
        if let guardState { return guardState }
        let progress = (try? store.remoteManifestProgress(folder: record.id)) ?? [:]
        return ManifestGuard(seen: progress.mapValues { .init(indexID: $0.indexID, lastSequence: $0.lastSequence) })
    }
}

/// Sealed chunks on disk, one file per chunk id under the folder's `.syncd/sealed/`, written as
/// temp file + fsync + rename so a crash leaves either no file or the whole one.
struct SealedChunkStore: Sendable {
    let directory: String

    func path(_ id: ChunkID) -> String { directory + "/" + Hex.encode(id.bytes) }

    func read(_ id: ChunkID) -> [UInt8]? {
        FileManager.default.contents(atPath: path(id)).map { Array($0) }
    }

    func write(_ id: ChunkID, _ bytes: [UInt8]) throws {
        let target = path(id)
        if FileManager.default.fileExists(atPath: target) { return }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let temp = target + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        var written = 0
        let ok = bytes.withUnsafeBytes { raw -> Bool in
            while written < raw.count {
                let n = Foundation.write(fd, raw.baseAddress! + written, raw.count - written)
                if n <= 0 { return false }
                written += n
            }
            return fsync(fd) == 0
        }
        close(fd)
        guard ok, rename(temp, target) == 0 else {
            let code = POSIXErrorCode(rawValue: errno) ?? .EIO
            unlink(temp)
            throw POSIXError(code)
        }
    }
}
