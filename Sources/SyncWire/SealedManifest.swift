@preconcurrency import Crypto
import SyncCore
import SyncSecurity

/// The keys a manifest needs; RO peers have no signing key, storage peers no manifest key.
public struct ManifestKeys: Sendable {
    public var folderID: [UInt8]
    public var publicKey: Curve25519.Signing.PublicKey
    public var manifestKey: [UInt8]?
    public var signingKey: Curve25519.Signing.PrivateKey?

    public init(folderID: [UInt8], publicKey: Curve25519.Signing.PublicKey, manifestKey: [UInt8]?,
                signingKey: Curve25519.Signing.PrivateKey?) {
        self.folderID = folderID; self.publicKey = publicKey; self.manifestKey = manifestKey; self.signingKey = signingKey
    }
}

/// A batch of index entries from one device's index, encrypted with the folder's manifest key and
/// signed with the folder's Ed25519 key (Protocol/manifest.md). File names, sizes and chunk lists
/// exist only inside the ciphertext. Anyone — storage peers too — can check the signature.
public struct SealedManifest: Sendable, Equatable {
    public static let magic: [UInt8] = Array("SYM1".utf8)
    public static let maxEntries = 100_000

    public struct Header: Sendable, Equatable {
        public var folderID: [UInt8]        // 32
        public var origin: ShortDeviceID    // whose index these entries are
        public var indexID: UInt64          // changes when the origin's index is reset
        public var firstSequence: UInt64
        public var lastSequence: UInt64

        public init(folderID: [UInt8], origin: ShortDeviceID, indexID: UInt64, firstSequence: UInt64, lastSequence: UInt64) {
            self.folderID = folderID; self.origin = origin; self.indexID = indexID
            self.firstSequence = firstSequence; self.lastSequence = lastSequence
        }
    }

    public var header: Header
    public var nonce: [UInt8]               // 12
    public var ciphertext: [UInt8]
    public var signature: [UInt8]           // 64

    public enum Failure: Error, Equatable, CustomStringConvertible {
        case cannotSign, cannotDecrypt, wrongFolder, badSignature, decryptFailed
        case malformed(String)

        public var description: String {
            switch self {
            case .cannotSign: return "only a read-write secret can sign manifests"
            case .cannotDecrypt: return "a storage secret cannot read manifests"
            case .wrongFolder: return "manifest is for another folder"
            case .badSignature: return "manifest is not signed by the folder key"
            case .decryptFailed: return "manifest does not decrypt under the folder's manifest key"
            case .malformed(let why): return "malformed manifest: \(why)"
            }
        }
    }

    // MARK: sealing and opening

    /// `nonce` is for test vectors only; a real manifest gets 96 random bits. `sequences` covers a
    /// batch whose entries were left out (the peer already has them) so its acknowledgement moves on.
    public static func seal(_ entries: [FileEntry], origin: ShortDeviceID, indexID: UInt64,
                            keys: ManifestKeys, nonce fixedNonce: [UInt8]? = nil,
                            sequences: (first: UInt64, last: UInt64)? = nil) throws(Failure) -> SealedManifest {
        try seal(entries.map { ManifestEntry($0) }, origin: origin, indexID: indexID, keys: keys, nonce: fixedNonce, sequences: sequences)
    }

    /// Seals entries whose long chunk lists travel as pieces (`ManifestEntry.pieces`).
    public static func seal(_ entries: [ManifestEntry], origin: ShortDeviceID, indexID: UInt64,
                            keys: ManifestKeys, nonce fixedNonce: [UInt8]? = nil,
                            sequences: (first: UInt64, last: UInt64)? = nil) throws(Failure) -> SealedManifest {
        guard let signer = keys.signingKey else { throw .cannotSign }
        guard let mk = keys.manifestKey else { throw .cannotDecrypt }
        let seqs = entries.map { UInt64($0.entry.sequence) }
        let header = Header(folderID: keys.folderID, origin: origin, indexID: indexID,
                            firstSequence: sequences?.first ?? seqs.min() ?? 0, lastSequence: sequences?.last ?? seqs.max() ?? 0)
        let nonce = fixedNonce ?? (0..<12).map { _ in UInt8.random(in: 0...255) }
        let headerBytes = encodeHeader(header)
        let ciphertext = BulkAEAD(key: mk).seal(nonce: nonce, ad: headerBytes, plaintext: ManifestCodec.encode(entries))
        let signed = signedBytes(headerBytes, nonce, ciphertext)
        guard let sig = try? signer.signature(for: signed) else { throw .cannotSign }
        return SealedManifest(header: header, nonce: nonce, ciphertext: ciphertext, signature: Array(sig))
    }

    /// Checks folder and signature only: what a storage peer can do before storing and serving.
    public func verify(keys: ManifestKeys) throws(Failure) {
        guard header.folderID == keys.folderID else { throw .wrongFolder }
        let signed = Self.signedBytes(Self.encodeHeader(header), nonce, ciphertext)
        guard keys.publicKey.isValidSignature(signature, for: signed) else { throw .badSignature }
    }

    /// Verifies, decrypts and decodes the entries (RW and RO peers). An entry whose chunk list
    /// came as pieces has no chunks until the pieces are fetched (`ManifestEntry.resolved`).
    public func open(keys: ManifestKeys) throws(Failure) -> [ManifestEntry] {
        try verify(keys: keys)
        guard let mk = keys.manifestKey else { throw .cannotDecrypt }
        let plain: [UInt8]
        do { plain = try BulkAEAD(key: mk).open(nonce: nonce, ad: Self.encodeHeader(header), ciphertext: ciphertext) } catch { throw .decryptFailed }
        let entries: [ManifestEntry]
        do { entries = try ManifestCodec.decode(plain) } catch { throw .malformed("\(error)") }
        for e in entries.map(\.entry) where UInt64(e.sequence) < header.firstSequence || UInt64(e.sequence) > header.lastSequence {
            throw .malformed("entry sequence \(e.sequence) outside the header's range")
        }
        return entries
    }

    // MARK: wire form

    public var encoded: [UInt8] {
        var w = ByteWriter(capacity: 140 + ciphertext.count)
        w.raw(Self.encodeHeader(header))
        w.raw(nonce)
        w.u32(UInt32(ciphertext.count))
        w.raw(ciphertext)
        w.raw(signature)
        return w.bytes
    }

    public init(decoding bytes: [UInt8]) throws(WireError) {
        var r = ByteReader(bytes)
        guard Array(try r.take(4)) == Self.magic else { throw .malformed("not a sealed manifest") }
        header = Header(folderID: Array(try r.take(32)), origin: try r.u64(), indexID: try r.u64(),
                        firstSequence: try r.u64(), lastSequence: try r.u64())
        guard header.firstSequence <= header.lastSequence else { throw .malformed("sequence range reversed") }
        nonce = Array(try r.take(12))
        let n = Int(try r.u32())
        ciphertext = Array(try r.take(n))
        guard ciphertext.count >= BulkAEAD.tagSize else { throw .malformed("ciphertext shorter than its tag") }
        signature = Array(try r.take(64))
        try r.expectEnd()
    }

    public init(header: Header, nonce: [UInt8], ciphertext: [UInt8], signature: [UInt8]) {
        self.header = header; self.nonce = nonce; self.ciphertext = ciphertext; self.signature = signature
    }

    static func encodeHeader(_ h: Header) -> [UInt8] {
        var w = ByteWriter(capacity: 68)
        w.raw(magic)
        w.raw(h.folderID)
        w.u64(h.origin)
        w.u64(h.indexID)
        w.u64(h.firstSequence)
        w.u64(h.lastSequence)
        return w.bytes
    }

    static func signedBytes(_ header: [UInt8], _ nonce: [UInt8], _ ciphertext: [UInt8]) -> [UInt8] {
        var w = ByteWriter(capacity: header.count + 16 + ciphertext.count)
        w.raw(header)
        w.raw(nonce)
        w.u32(UInt32(ciphertext.count))
        w.raw(ciphertext)
        return w.bytes
    }
}

/// An entry as a manifest carries it: a long chunk list may travel as pieces (ChunkListPieces),
/// and then `entry.chunks` stays empty until they are fetched and `resolved(with:)`.
public struct ManifestEntry: Hashable, Sendable {
    public var entry: FileEntry
    public var pieces: [ChunkListPieces.Ref]?

    public init(_ entry: FileEntry, pieces: [ChunkListPieces.Ref]? = nil) { self.entry = entry; self.pieces = pieces }

    /// The entry with the chunks its pieces list, in order; they must cover its size.
    public func resolved(with lists: [[ChunkRef]]) throws(WireError) -> FileEntry {
        guard let pieces else { return entry }
        guard lists.count == pieces.count else { throw .malformed("\(lists.count) of \(pieces.count) pieces") }
        var e = entry
        e.chunks = lists.flatMap { $0 }
        let total = e.chunks.reduce(Int64(0)) { $0 + Int64($1.size) }
        guard total == e.metadata.size else { throw .malformed("pieces cover \(total) of \(e.metadata.size) bytes of \(e.path)") }
        return e
    }
}

/// The plaintext inside a sealed manifest: a count, then entries (Protocol/manifest.md).
public enum ManifestCodec {
    /// Set in an entry's chunk count when pieces follow instead of chunks.
    static let piecesFlag: UInt32 = 1 << 31

    public static func encode(_ entries: [FileEntry]) -> [UInt8] { encode(entries.map { ManifestEntry($0) }) }

    public static func encode(_ entries: [ManifestEntry]) -> [UInt8] {
        var w = ByteWriter(capacity: entries.count * 128)
        w.u32(UInt32(entries.count))
        for m in entries {
            let e = m.entry
            w.name(e.path)
            w.u8(e.metadata.kind.rawValue)
            w.u8(e.deleted ? 1 : 0)
            w.u64(UInt64(bitPattern: e.metadata.size))
            w.u32(e.metadata.mode)
            w.u64(UInt64(bitPattern: e.metadata.mtimeNs))
            w.name(e.metadata.symlinkTarget ?? "")
            w.u16(UInt16(e.version.counters.count))
            for c in e.version.counters { w.u64(c.device); w.u64(c.value) }
            w.u64(UInt64(e.sequence))
            w.u8(FastCDC.version)
            // A piece goes out as (id, chunk count) in the place of a chunk's (id, size).
            let list = m.pieces.map { $0.map { ChunkRef(id: $0.id, size: $0.count) } } ?? e.chunks
            w.u32(UInt32(list.count) | (m.pieces == nil ? 0 : piecesFlag))
            for c in list { withUnsafeTemporaryAllocation(byteCount: 32, alignment: 8) { c.id.write(to: $0.baseAddress!); w.raw(UnsafeRawBufferPointer($0)) }; w.u32(c.size) }
        }
        return w.bytes
    }

    /// Decodes and validates every entry: path rules, known kind, chunks covering the size (for
    /// pieces: at least one chunk per piece, and no more than the size in bytes).
    public static func decode(_ bytes: [UInt8]) throws(WireError) -> [ManifestEntry] {
        var r = ByteReader(bytes)
        let count = try r.count32(itemSize: 40)
        guard count <= SealedManifest.maxEntries else { throw .malformed("\(count) entries in one manifest") }
        var out: [ManifestEntry] = []
        out.reserveCapacity(count)
        for _ in 0..<count {
            let path = try r.name()
            if let problem = RelativePath.validate(path) { throw .malformed("path \(path.debugDescription): \(problem)") }
            guard let kind = FileKind(rawValue: try r.u8()) else { throw .malformed("unknown kind") }
            let deletedByte = try r.u8()
            guard deletedByte <= 1 else { throw .malformed("deleted flag \(deletedByte)") }
            let size = Int64(bitPattern: try r.u64())
            guard size >= 0 else { throw .malformed("negative size") }
            let mode = try r.u32()
            guard mode <= 0o7777 else { throw .malformed("mode \(mode)") }
            let mtime = Int64(bitPattern: try r.u64())
            let target = try r.name()
            guard kind == .symlink || target.isEmpty else { throw .malformed("link target on a non-link") }
            guard !target.utf8.contains(0) else { throw .malformed("link target with a NUL byte") }
            let vcount = Int(try r.u16())
            guard vcount * 16 <= r.remaining else { throw .malformed("version vector longer than the message") }
            var counters: [VersionVector.Counter] = []
            for _ in 0..<vcount { counters.append(.init(device: try r.u64(), value: try r.u64())) }
            let sequence = try r.u64()
            guard sequence <= UInt64(Int64.max) else { throw .malformed("sequence out of range") }
            let chunkerVersion = try r.u8()
            guard chunkerVersion == FastCDC.version else { throw .malformed("chunker version \(chunkerVersion)") }
            let rawCount = try r.u32()
            let asPieces = rawCount & piecesFlag != 0
            let ccount = Int(rawCount & ~piecesFlag)
            guard ccount * 36 <= r.remaining else { throw .malformed("count \(ccount) larger than the message") }
            var chunks: [ChunkRef] = []
            chunks.reserveCapacity(ccount)
            var total: Int64 = 0
            for _ in 0..<ccount {
                let id = try r.take(32).withUnsafeBytes { ChunkID($0) }
                let csize = try r.u32()
                guard csize > 0 else { throw .malformed("empty \(asPieces ? "piece" : "chunk")") }
                total += Int64(csize)
                chunks.append(ChunkRef(id: id, size: csize))
            }
            let deleted = deletedByte == 1
            var pieces: [ChunkListPieces.Ref]?
            if asPieces {
                guard kind == .file && !deleted && ccount > 0 else { throw .malformed("pieces on an entry without content") }
                // `size` of a piece reference is its chunk count: each chunk holds at least a byte.
                guard chunks.allSatisfy({ Int($0.size) <= ChunkListPieces.maxChunksPerPiece }), total <= size else {
                    throw .malformed("pieces of \(path) list more chunks than it has bytes or a piece allows")
                }
                pieces = chunks.map { ChunkListPieces.Ref(id: $0.id, count: $0.size) }
                chunks = []
            } else if kind == .file && !deleted {
                guard total == size else { throw .malformed("chunks cover \(total) of \(size) bytes of \(path)") }
            } else if !chunks.isEmpty {
                throw .malformed("chunks on a \(deleted ? "deleted entry" : "non-file")")
            }
            let meta = FileMetadata(kind: kind, size: size, mode: mode, mtimeNs: mtime, ctimeNs: 0, inode: 0,
                                    symlinkTarget: kind == .symlink ? target : nil)
            out.append(ManifestEntry(FileEntry(path: path, metadata: meta, deleted: deleted, version: VersionVector(counters),
                                               sequence: Int64(sequence), chunks: chunks), pieces: pieces))
        }
        try r.expectEnd()
        return out
    }
}

/// Refuses rollbacks and replays (DESIGN "attacks to resist"): per origin index, a batch must be
/// newer than the last accepted one; per path, an entry must not be older than what we hold.
public struct ManifestGuard: Sendable {
    public struct Progress: Sendable, Equatable {
        public var indexID: UInt64
        public var lastSequence: UInt64
        public init(indexID: UInt64, lastSequence: UInt64) { self.indexID = indexID; self.lastSequence = lastSequence }
    }
    public private(set) var seen: [ShortDeviceID: Progress] = [:]

    public init(seen: [ShortDeviceID: Progress] = [:]) { self.seen = seen }

    public enum Verdict: Equatable, Sendable { case accept, duplicate, rollback }

    /// Whether a batch from `header.origin` is new; call `record` once it is applied.
    public func admit(_ header: SealedManifest.Header) -> Verdict {
        guard let p = seen[header.origin], p.indexID == header.indexID else { return .accept }
        return header.lastSequence <= p.lastSequence ? .duplicate : .accept
    }

    /// Raises the origin's floor to `header.lastSequence` (a new index id starts over); never lowers it.
    public mutating func record(_ header: SealedManifest.Header) {
        if let p = seen[header.origin], p.indexID == header.indexID, p.lastSequence >= header.lastSequence { return }
        seen[header.origin] = Progress(indexID: header.indexID, lastSequence: header.lastSequence)
    }

    /// An entry older than (dominated by) the version we already hold is a rollback.
    public static func judge(_ incoming: FileEntry, current: VersionVector?) -> Verdict {
        guard let current else { return .accept }
        switch incoming.version.compare(current) {
        case .greater, .concurrent: return .accept
        case .equal: return .duplicate
        case .lesser: return .rollback
        }
    }
}
