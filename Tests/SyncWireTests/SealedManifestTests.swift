import Crypto
import SyncCore
@testable import SyncWire
import XCTest

final class SealedManifestTests: XCTestCase {
    private let folderKey = Curve25519.Signing.PrivateKey()
    private let manifestKey = [UInt8](repeating: 9, count: 32)
    private let folderID = [UInt8](repeating: 1, count: 32)

    private var rw: ManifestKeys { ManifestKeys(folderID: folderID, publicKey: folderKey.publicKey, manifestKey: manifestKey, signingKey: folderKey) }
    private var ro: ManifestKeys { ManifestKeys(folderID: folderID, publicKey: folderKey.publicKey, manifestKey: manifestKey, signingKey: nil) }
    private var storage: ManifestKeys { ManifestKeys(folderID: folderID, publicKey: folderKey.publicKey, manifestKey: nil, signingKey: nil) }

    private func entries(_ seq: Int64 = 1, name: String = "secret-plans.txt") -> [FileEntry] {
        let id = ChunkID(w0: 1, w1: 2, w2: 3, w3: 4)
        return [
            FileEntry(path: "dir/\(name)", metadata: FileMetadata(kind: .file, size: 70000, mode: 0o640, mtimeNs: 123, ctimeNs: 0, inode: 0),
                      version: VersionVector().incremented(by: 7), sequence: seq,
                      chunks: [ChunkRef(id: id, size: 65536), ChunkRef(id: id, size: 4464)]),
            FileEntry(path: "dir", metadata: FileMetadata(kind: .directory, size: 0, mode: 0o755, mtimeNs: 0, ctimeNs: 0, inode: 0),
                      version: VersionVector().incremented(by: 7), sequence: seq + 1),
            FileEntry(path: "link", metadata: FileMetadata(kind: .symlink, size: 3, mode: 0o777, mtimeNs: 5, ctimeNs: 0, inode: 0, symlinkTarget: "dir"),
                      version: VersionVector().incremented(by: 7), sequence: seq + 2),
            FileEntry(path: "gone", metadata: FileMetadata(kind: .file, size: 1, mode: 0o644, mtimeNs: 5, ctimeNs: 0, inode: 0),
                      deleted: true, version: VersionVector().incremented(by: 7).incremented(by: 7), sequence: seq + 3),
        ]
    }

    func test_sealOpen_roundTripsThroughTheWire() throws {
        let sealed = try SealedManifest.seal(entries(), origin: 7, indexID: 99, keys: rw)
        let decoded = try SealedManifest(decoding: sealed.encoded)
        XCTAssertEqual(decoded, sealed)
        XCTAssertEqual(try decoded.open(keys: ro).map(\.entry), entries(), "read-only peers read manifests")
        XCTAssertEqual(decoded.header.firstSequence, 1)
        XCTAssertEqual(decoded.header.lastSequence, 4)
    }

    func test_fileNamesExistOnlyInsideTheEncryption() throws {
        let wire = try SealedManifest.seal(entries(), origin: 7, indexID: 99, keys: rw).encoded
        for needle in ["secret-plans", "dir/", "link"] {
            XCTAssertNil(wire.firstRange(of: Array(needle.utf8)), "\(needle) visible on the wire")
        }
    }

    func test_readOnlyAndStorage_cannotSign_storageCannotRead_butCanVerify() throws {
        XCTAssertThrowsError(try SealedManifest.seal(entries(), origin: 1, indexID: 1, keys: ro)) {
            XCTAssertEqual($0 as? SealedManifest.Failure, .cannotSign)
        }
        let sealed = try SealedManifest.seal(entries(), origin: 7, indexID: 1, keys: rw)
        XCTAssertNoThrow(try sealed.verify(keys: storage))
        XCTAssertThrowsError(try sealed.open(keys: storage)) { XCTAssertEqual($0 as? SealedManifest.Failure, .cannotDecrypt) }
    }

    func test_manifestSignedByANonFolderKey_isRefusedByEveryone() throws {
        let impostor = ManifestKeys(folderID: folderID, publicKey: folderKey.publicKey, manifestKey: manifestKey,
                                    signingKey: Curve25519.Signing.PrivateKey())
        let forged = try SealedManifest.seal(entries(), origin: 66, indexID: 1, keys: impostor)
        for keys in [rw, ro, storage] {
            XCTAssertThrowsError(try forged.verify(keys: keys)) { XCTAssertEqual($0 as? SealedManifest.Failure, .badSignature) }
        }
    }

    func test_anyTamperedByte_isRefused() throws {
        let wire = try SealedManifest.seal(entries(), origin: 7, indexID: 1, keys: rw).encoded
        for i in stride(from: 0, to: wire.count, by: 3) {
            var bad = wire
            bad[i] ^= 0x01
            guard let m = try? SealedManifest(decoding: bad) else { continue }
            XCTAssertThrowsError(try m.open(keys: ro), "byte \(i)")
        }
    }

    func test_wrongFolder_andTruncation_areRefused() throws {
        let sealed = try SealedManifest.seal(entries(), origin: 7, indexID: 1, keys: rw)
        var other = ro
        other.folderID = [UInt8](repeating: 2, count: 32)
        XCTAssertThrowsError(try sealed.open(keys: other)) { XCTAssertEqual($0 as? SealedManifest.Failure, .wrongFolder) }
        let wire = sealed.encoded
        for cut in [0, 3, 50, wire.count - 1] {
            XCTAssertThrowsError(try SealedManifest(decoding: Array(wire.prefix(cut))))
        }
        XCTAssertThrowsError(try SealedManifest(decoding: wire + [0]))
    }

    func test_olderManifestReplayedOverNewer_isRefused() throws {
        var guardState = ManifestGuard()
        let older = try SealedManifest.seal(entries(1), origin: 7, indexID: 5, keys: rw)
        let newer = try SealedManifest.seal(entries(5), origin: 7, indexID: 5, keys: rw)
        XCTAssertEqual(guardState.admit(newer.header), .accept)
        guardState.record(newer.header)
        XCTAssertEqual(guardState.admit(older.header), .duplicate, "replayed batch")
        XCTAssertEqual(guardState.admit(newer.header), .duplicate, "same batch twice")
        let reset = try SealedManifest.seal(entries(1), origin: 7, indexID: 6, keys: rw)
        XCTAssertEqual(guardState.admit(reset.header), .accept, "a new index id starts over")

        // Per path: an entry dominated by what we hold is a rollback, even inside a fresh batch.
        let current = VersionVector().incremented(by: 7).incremented(by: 7)
        var stale = entries()[0]
        stale.version = VersionVector().incremented(by: 7)
        XCTAssertEqual(ManifestGuard.judge(stale, current: current), .rollback)
        stale.version = current
        XCTAssertEqual(ManifestGuard.judge(stale, current: current), .duplicate)
        stale.version = current.incremented(by: 8)
        XCTAssertEqual(ManifestGuard.judge(stale, current: current), .accept)
        stale.version = VersionVector().incremented(by: 9)
        XCTAssertEqual(ManifestGuard.judge(stale, current: current), .accept, "concurrent: a conflict, resolved by the engine")
    }

    func test_codec_rejectsHostileEntries() throws {
        func reject(_ mutate: (inout FileEntry) -> Void, _ why: String) {
            var e = entries()[0]
            mutate(&e)
            XCTAssertThrowsError(try ManifestCodec.decode(ManifestCodec.encode([e])), why)
        }
        reject({ $0.path = "../escape" }, "dot-dot")
        reject({ $0.path = "/etc/passwd" }, "absolute")
        reject({ $0.path = ".syncd/trash/x" }, "state dir")
        reject({ $0.path = "a\u{0}b" }, "NUL")
        reject({ $0.metadata.size = 1 }, "chunks do not cover the size")
        reject({ $0.metadata.mode = 0o17777 }, "mode bits")
        XCTAssertThrowsError(try ManifestCodec.decode([0xFF, 0xFF, 0xFF, 0xFF]), "count larger than the message")
    }

    // Names are bytes (RelativePath path text inside, raw bytes on the wire).

    private func entry(_ path: String, target: String? = nil) -> FileEntry {
        FileEntry(path: path, metadata: FileMetadata(kind: target == nil ? .directory : .symlink, size: 0, mode: 0o755, mtimeNs: 1,
                                                     ctimeNs: 0, inode: 0, symlinkTarget: target),
                  version: VersionVector().incremented(by: 7), sequence: 1)
    }

    func test_codec_carriesNamesAsTheirRawBytes() throws {
        let named = [entry("dir%E9"), entry("dir%E9/caf%C3%A9"), entry("dir%E9/cafe%CC%81"), entry("100%25"),
                     entry("link", target: "../x%E9/caf%C3%A9")]
        let wire = ManifestCodec.encode(named)
        XCTAssertEqual(try ManifestCodec.decode(wire).map(\.entry), named)
        XCTAssertTrue(wire.contains(subsequence: [0, 10] + Array("dir".utf8) + [0xE9, UInt8(ascii: "/")] + Array("caf".utf8) + [0xC3, 0xA9]),
                      "length-prefixed raw bytes")
        XCTAssertTrue(wire.contains(subsequence: Array("cafe".utf8) + [0xCC, 0x81]), "NFD stays NFD")
        XCTAssertTrue(wire.contains(subsequence: [0, 4] + Array("100%".utf8)))
        XCTAssertTrue(wire.contains(subsequence: Array("../x".utf8) + [0xE9]), "link targets too")
        XCTAssertFalse(wire.contains(subsequence: Array("%E9".utf8)), "no path text on the wire")
        XCTAssertFalse(wire.contains(subsequence: Array("%C3".utf8)))
    }

    func test_codec_rejectsNULInNamesAndTargets() {
        XCTAssertThrowsError(try ManifestCodec.decode(ManifestCodec.encode([entry("a\u{0}b")])))
        XCTAssertThrowsError(try ManifestCodec.decode(ManifestCodec.encode([entry("link", target: "a\u{0}b")])))
    }
}

private extension Array where Element == UInt8 {
    func contains(subsequence needle: [UInt8]) -> Bool {
        guard needle.count <= count else { return false }
        return (0...(count - needle.count)).contains { self[$0..<$0 + needle.count].elementsEqual(needle) }
    }
}
