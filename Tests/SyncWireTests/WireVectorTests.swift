@preconcurrency import Crypto
import Foundation
import SyncCore
import SyncSecurity
@testable import SyncWire
import XCTest

/// Protocol/wire.md and manifest.md, byte for byte, against vectors computed by an independent
/// Python implementation (Protocol/tools/wire_vectors.py).
final class WireVectorTests: XCTestCase {
    struct Vectors: Decodable {
        let w, transportKey, pingFrame, chunkContent, chunkID, sealedChunk: String
        let manifestNonce, manifestEntries, sealedManifest: String
        struct Piece: Decodable { let id: String; let count: UInt32; let bytes: String }
        let pieces: [Piece]
        let piecesEntries: String
    }

    func load() throws -> Vectors {
        let url = try XCTUnwrap(Bundle.module.url(forResource: "wire", withExtension: "json", subdirectory: "Vectors"))
        return try JSONDecoder().decode(Vectors.self, from: Data(contentsOf: url))
    }

    func test_transportFrame_shouldMatchVector() throws {
        let v = try load()
        var sender = TransportCipher(sendKey: hexBytes(v.transportKey), receiveKey: hexBytes(v.transportKey))
        let frame = FrameDecoder.encode(sender.seal(SessionMessage.ping(1).encoded))
        XCTAssertEqual(frame, hexBytes(v.pingFrame))
        var receiver = TransportCipher(sendKey: hexBytes(v.transportKey), receiveKey: hexBytes(v.transportKey))
        var decoder = FrameDecoder()
        decoder.feed(frame)
        XCTAssertEqual(try SessionMessage(decoding: receiver.open(try XCTUnwrap(decoder.next()))), .ping(1))
    }

    func test_sealedChunk_shouldMatchVector() throws {
        let v = try load()
        let keys = FolderSecret(readWrite: hexBytes(v.w)).keys
        let content = hexBytes(v.chunkContent)
        let ids = ChunkHasher(key: try XCTUnwrap(keys.chunkIDKey))
        let id = ids.chunkID(content)
        XCTAssertEqual(id.bytes, hexBytes(v.chunkID))
        let sealed = try SealedChunk.seal(content, id: id, chunkKey: try XCTUnwrap(keys.chunkKey), signer: try XCTUnwrap(keys.signingKey))
        XCTAssertEqual(sealed.encoded, hexBytes(v.sealedChunk))
        let decoded = try SealedChunk(decoding: hexBytes(v.sealedChunk))
        XCTAssertEqual(try decoded.open(chunkKey: keys.chunkKey!, ids: ids,
                                        folderKey: .init(rawRepresentation: keys.folderPublicKey)), content)
    }

    func test_sealedManifest_shouldMatchVector() throws {
        let v = try load()
        let secret = FolderSecret(readWrite: hexBytes(v.w))
        let k = secret.keys
        let keys = ManifestKeys(folderID: k.folderID, publicKey: try .init(rawRepresentation: k.folderPublicKey),
                                manifestKey: k.manifestKey, signingKey: k.signingKey)
        let content = hexBytes(v.chunkContent)
        let entry = FileEntry(path: "docs/readme.txt",
                              metadata: FileMetadata(kind: .file, size: Int64(content.count), mode: 0o644,
                                                     mtimeNs: 1_700_000_000_123_456_789, ctimeNs: 0, inode: 0),
                              version: VersionVector([.init(device: 0x0102_0304_0506_0708, value: 5)]), sequence: 3,
                              chunks: [ChunkRef(id: try XCTUnwrap(ChunkID(bytes: hexBytes(v.chunkID))), size: UInt32(content.count))])
        XCTAssertEqual(ManifestCodec.encode([entry]), hexBytes(v.manifestEntries))
        let sealed = try SealedManifest.seal([entry], origin: 7, indexID: 99, keys: keys, nonce: hexBytes(v.manifestNonce))
        XCTAssertEqual(sealed.encoded, hexBytes(v.sealedManifest))
        let decoded = try SealedManifest(decoding: hexBytes(v.sealedManifest))
        XCTAssertNoThrow(try decoded.verify(keys: keys))
        XCTAssertEqual(try decoded.open(keys: keys).map(\.entry), [entry])
    }

    func test_chunkListPieces_shouldMatchVector() throws {
        let v = try load()
        let ids = ChunkHasher(key: try XCTUnwrap(FolderSecret(readWrite: hexBytes(v.w)).keys.chunkIDKey))
        let chunks = (0..<300).map { i in ChunkRef(id: ids.chunkID(Array("chunk \(i)".utf8)), size: UInt32(1000 + i)) }
        let pieces = ChunkListPieces.split(chunks, ids: ids)
        XCTAssertEqual(pieces.map { Hex.encode($0.ref.id.bytes) }, v.pieces.map(\.id))
        XCTAssertEqual(pieces.map(\.ref.count), v.pieces.map(\.count))
        XCTAssertEqual(pieces.map(\.bytes), v.pieces.map { hexBytes($0.bytes) })
        let entry = FileEntry(path: "db.bin",
                              metadata: FileMetadata(kind: .file, size: chunks.reduce(0) { $0 + Int64($1.size) }, mode: 0o600,
                                                     mtimeNs: 5, ctimeNs: 0, inode: 0),
                              version: VersionVector([.init(device: 9, value: 1)]), sequence: 4, chunks: chunks)
        let listed = ManifestEntry(entry, pieces: pieces.map(\.ref))
        XCTAssertEqual(ManifestCodec.encode([listed]), hexBytes(v.piecesEntries))
        let decoded = try ManifestCodec.decode(hexBytes(v.piecesEntries))
        XCTAssertEqual(decoded, [ManifestEntry({ var e = entry; e.chunks = []; return e }(), pieces: pieces.map(\.ref))])
        XCTAssertEqual(try decoded[0].resolved(with: pieces.map { try ChunkListPieces.decode($0.bytes, as: $0.ref) }), entry)
    }
}

func hexBytes(_ text: String) -> [UInt8] {
    var out: [UInt8] = []
    var it = text.utf8.makeIterator()
    while let hi = it.next(), let lo = it.next() { out.append(UInt8(String(decoding: [hi, lo], as: UTF8.self), radix: 16)!) }
    return out
}
