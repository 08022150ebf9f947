import Crypto
import SyncCore
import SyncSecurity
@testable import SyncWire
import XCTest

final class SealedChunkTests: XCTestCase {
    private let folderKey = Curve25519.Signing.PrivateKey()
    private let chunkKey = [UInt8](repeating: 5, count: 32)
    private let ids = ChunkHasher(key: [UInt8](repeating: 6, count: 32))

    func test_padme_matchesThePaperAndNeverShrinks() {
        XCTAssertEqual(SealedChunk.padme(1), 1)
        XCTAssertEqual(SealedChunk.padme(9), 10)   // E=3, S=2: round to a multiple of 2
        XCTAssertEqual(SealedChunk.padme(100), 104)
        XCTAssertEqual(SealedChunk.padme(65540), 67584)   // E=16, S=5: multiple of 2048
        for n in stride(from: 1, to: 300_000, by: 97) {
            let p = SealedChunk.padme(n)
            XCTAssertGreaterThanOrEqual(p, n)
            XCTAssertLessThanOrEqual(Double(p - n) / Double(n), 0.12)
        }
    }

    func test_storagePeerBytes_containNoPlaintext_andHideExactSize() throws {
        let text = Array(String(repeating: "Quarterly results: CONFIDENTIAL. ", count: 200).utf8)
        let sealed = try SealedChunk.seal(text, id: ids.chunkID(text), chunkKey: chunkKey, signer: folderKey)
        let stored = sealed.encoded
        XCTAssertNil(stored.firstRange(of: Array("CONFIDENTIAL".utf8)))
        XCTAssertNil(stored.firstRange(of: Array(text.prefix(16))))
        let a = try SealedChunk.seal(Array(text.prefix(6600)), id: ids.chunkID(Array(text.prefix(6600))), chunkKey: chunkKey, signer: folderKey)
        let b = try SealedChunk.seal(Array(text.prefix(6590)), id: ids.chunkID(Array(text.prefix(6590))), chunkKey: chunkKey, signer: folderKey)
        XCTAssertEqual(a.ciphertext.count, b.ciphertext.count, "nearby sizes pad to the same length")
    }

    func test_storageVerifies_readerOpens_andTamperingIsCaught() throws {
        let data = (0..<70000).map { UInt8(truncatingIfNeeded: $0 * 7) }
        let id = ids.chunkID(data)
        let sealed = try SealedChunk(decoding: SealedChunk.seal(data, id: id, chunkKey: chunkKey, signer: folderKey).encoded)
        XCTAssertNoThrow(try sealed.verify(folderKey: folderKey.publicKey))
        XCTAssertEqual(try sealed.open(chunkKey: chunkKey, ids: ids, folderKey: folderKey.publicKey), data)

        var flipped = sealed.ciphertext
        flipped[100] ^= 1
        let tampered = SealedChunk(id: id, ciphertext: flipped, signature: sealed.signature)
        XCTAssertThrowsError(try tampered.verify(folderKey: folderKey.publicKey)) { XCTAssertEqual($0 as? SealedChunk.Failure, .badSignature) }

        let forged = try SealedChunk.seal(data, id: id, chunkKey: chunkKey, signer: Curve25519.Signing.PrivateKey())
        XCTAssertThrowsError(try forged.verify(folderKey: folderKey.publicKey), "signed by a key that is not the folder's")

        let wrongID = try SealedChunk.seal(data, id: ids.chunkID([1, 2, 3]), chunkKey: chunkKey, signer: folderKey)
        XCTAssertThrowsError(try wrongID.open(chunkKey: chunkKey, ids: ids, folderKey: folderKey.publicKey)) {
            XCTAssertEqual($0 as? SealedChunk.Failure, .wrongContent)
        }
        XCTAssertThrowsError(try sealed.open(chunkKey: [UInt8](repeating: 1, count: 32), ids: ids, folderKey: folderKey.publicKey))
    }

    func test_decoding_rejectsTruncationAndAbsurdLengths() throws {
        let wire = try SealedChunk.seal([1, 2, 3], id: ids.chunkID([1, 2, 3]), chunkKey: chunkKey, signer: folderKey).encoded
        for cut in [0, 4, 36, 40, wire.count - 1] { XCTAssertThrowsError(try SealedChunk(decoding: Array(wire.prefix(cut)))) }
        var huge = wire
        huge.replaceSubrange(36..<40, with: [0xFF, 0xFF, 0xFF, 0xFF])
        XCTAssertThrowsError(try SealedChunk(decoding: huge))
    }
}
