import Crypto
import SyncCore
@testable import SyncSecurity
import XCTest

/// The OpenSSL hot paths must agree byte for byte with swift-crypto's implementations.
final class OpenSSLInteropTests: XCTestCase {
    private func bytes(_ n: Int, _ seed: UInt8) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(seed)) } }

    func test_chunkHasher_matchesSwiftCryptoHMAC() {
        for keyLength in [16, 32, 64, 100] {
            let key = bytes(keyLength, 3)
            let hasher = ChunkHasher(key: key)
            for size in [0, 1, 63, 64, 65, 4096, 65536 + 7] {
                let data = bytes(size, 9)
                let expected = Array(HMAC<SHA256>.authenticationCode(for: data, using: SymmetricKey(data: key)))
                XCTAssertEqual(hasher.chunkID(data).bytes, expected, "key \(keyLength) size \(size)")
            }
        }
    }

    func test_chunkHasher_knownAnswer_RFC4231Case2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?"
        let id = ChunkHasher(key: Array("Jefe".utf8)).chunkID(Array("what do ya want for nothing?".utf8))
        XCTAssertEqual(id.description, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    }

    func test_bulkAEAD_interoperatesWithSwiftCryptoBothWays() throws {
        let key = bytes(32, 1)
        let aead = BulkAEAD(key: key)
        for size in [0, 1, 15, 16, 17, 65536] {
            let plaintext = bytes(size, 5)
            let ad = bytes(size % 40, 7)
            let counter = UInt64(size) * 977
            let nonce = BulkAEAD.noiseNonce(counter)
            let sealed = aead.seal(nonce: nonce, ad: ad, plaintext: plaintext)
            // OpenSSL → swift-crypto
            let box = try AES.GCM.SealedBox(nonce: AES.GCM.Nonce(data: nonce), ciphertext: sealed.dropLast(16), tag: sealed.suffix(16))
            XCTAssertEqual(Array(try AES.GCM.open(box, using: SymmetricKey(data: key), authenticating: ad)), plaintext)
            // swift-crypto → OpenSSL
            let theirs = try AES.GCM.seal(plaintext, using: SymmetricKey(data: key), nonce: AES.GCM.Nonce(data: nonce), authenticating: ad)
            XCTAssertEqual(Array(theirs.ciphertext) + Array(theirs.tag), sealed)
            XCTAssertEqual(try aead.open(nonce: nonce, ad: ad, ciphertext: sealed), plaintext)
        }
    }

    func test_bulkAEAD_rejectsTamperingWrongNonceAndShortInput() {
        let aead = BulkAEAD(key: bytes(32, 2))
        let nonce = BulkAEAD.noiseNonce(1)
        let sealed = aead.seal(nonce: nonce, ad: [1, 2], plaintext: Array("secret".utf8))
        for i in sealed.indices {
            var bad = sealed
            bad[i] ^= 0x40
            XCTAssertThrowsError(try aead.open(nonce: nonce, ad: [1, 2], ciphertext: bad))
        }
        XCTAssertThrowsError(try aead.open(nonce: BulkAEAD.noiseNonce(2), ad: [1, 2], ciphertext: sealed))
        XCTAssertThrowsError(try aead.open(nonce: nonce, ad: [1, 3], ciphertext: sealed))
        XCTAssertThrowsError(try aead.open(nonce: nonce, ad: [], ciphertext: Array(sealed.prefix(15))))
        XCTAssertEqual(try aead.open(nonce: nonce, ad: [1, 2], ciphertext: sealed), Array("secret".utf8), "still usable after failures")
    }

    func test_noiseNonce_layout() {
        XCTAssertEqual(BulkAEAD.noiseNonce(0x0102_0304_0506_0708), [0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8])
    }

    func test_deviceID_humanFormRoundTripsAndCatchesTypos() throws {
        let id = DeviceID(publicKey: bytes(32, 4))
        let text = id.description
        XCTAssertEqual(text.count, 63)
        XCTAssertEqual(text.split(separator: "-").count, 8)
        XCTAssertEqual(try DeviceID(parsing: text), id)
        XCTAssertEqual(try DeviceID(parsing: text.lowercased().replacingOccurrences(of: "-", with: "")), id)
        var typo = Array(text)
        typo[3] = typo[3] == "A" ? "B" : "A"
        XCTAssertThrowsError(try DeviceID(parsing: String(typo)))
        XCTAssertEqual(id.short, id.bytes.prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
    }

    func test_deviceIdentity_isCreatedOnceWithMode0600() throws {
        let dir = NSTemporaryDirectory() + "ident-\(UUID())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let a = try DeviceIdentity.loadOrCreate(at: dir + "/device.key")
        let b = try DeviceIdentity.loadOrCreate(at: dir + "/device.key")
        XCTAssertEqual(a.deviceID, b.deviceID)
        let mode = try FileManager.default.attributesOfItem(atPath: dir + "/device.key")[.posixPermissions] as? NSNumber
        XCTAssertEqual(mode?.intValue, 0o600)
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: dir + "/bad.key"))
        XCTAssertThrowsError(try DeviceIdentity.loadOrCreate(at: dir + "/bad.key"))
    }

    /// Both implementations of `BulkAEAD` (the process picks the faster) give the same bytes and
    /// open each other's output, at every size and with any associated data; both refuse tampering.
    func test_bulkAEAD_implementationsAgreeByteForByte_andBothRefuseTampering() throws {
        let key = bytes(32, 4)
        let ossl = BulkAEAD(key: key, implementation: .openssl), boring = BulkAEAD(key: key, implementation: .swiftCrypto)
        for size in [0, 1, 15, 16, 17, 4096, 65536, 1 << 20] {
            let plaintext = bytes(size, 6), ad = bytes(size % 33, 8), nonce = BulkAEAD.noiseNonce(UInt64(size) &* 7919)
            let a = ossl.seal(nonce: nonce, ad: ad, plaintext: plaintext)
            let b = boring.seal(nonce: nonce, ad: ad, plaintext: plaintext)
            XCTAssertEqual(a, b, "size \(size)")
            XCTAssertEqual(try boring.open(nonce: nonce, ad: ad, ciphertext: a), plaintext)
            XCTAssertEqual(try ossl.open(nonce: nonce, ad: ad, ciphertext: b), plaintext)
            var bad = b
            bad[bad.count / 2] ^= 1
            XCTAssertThrowsError(try boring.open(nonce: nonce, ad: ad, ciphertext: bad))
            XCTAssertThrowsError(try boring.open(nonce: BulkAEAD.noiseNonce(1), ad: ad, ciphertext: b))
        }
        XCTAssertThrowsError(try boring.open(nonce: BulkAEAD.noiseNonce(0), ad: [], ciphertext: [1, 2, 3]))
        XCTAssertTrue(BulkAEAD.Implementation.allCases.contains(BulkAEAD.preferred))
        XCTAssertGreaterThan(BulkAEAD.throughput(.swiftCrypto, messages: 4), 0)
    }
}
