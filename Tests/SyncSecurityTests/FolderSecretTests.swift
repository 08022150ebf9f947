@preconcurrency import Crypto
import Foundation
@testable import SyncSecurity
import XCTest

final class FolderSecretTests: XCTestCase {
    struct Vector: Decodable {
        let w, signingSeed, folderPublicKey, r, s, rwText, roText, stText: String
        let folderID, sessionPSK, chunkIDKey, manifestKey, chunkKey: String
        let gearFirst4: [String], gearLast: String, gearSHA256: String
    }

    struct VectorFile: Decodable { let source: String, vectors: [Vector] }

    func loadVectors() throws -> [Vector] {
        let url = try XCTUnwrap(Bundle.module.url(forResource: "secrets", withExtension: "json", subdirectory: "Vectors"))
        let vectors = try JSONDecoder().decode(VectorFile.self, from: Data(contentsOf: url)).vectors
        XCTAssertEqual(vectors.count, 3)
        return vectors
    }

    /// Protocol/secrets.md's vectors, produced by an independent Python implementation.
    func test_keyChain_shouldMatchPublishedVectors() throws {
        for v in try loadVectors() {
            let w = FolderSecret(readWrite: hex(v.w))
            let r = try w.readOnly(), s = w.storage()
            XCTAssertEqual(w.text, v.rwText)
            XCTAssertEqual(r.text, v.roText)
            XCTAssertEqual(s.text, v.stText)
            XCTAssertEqual(r.secret, hex(v.r))
            XCTAssertEqual(s.secret, hex(v.s))
            XCTAssertEqual(r.storage(), s, "S from R equals S from W")
            XCTAssertEqual(FolderSecret.hkdf(hex(v.w), FolderSecret.Label.signingKey, 32), hex(v.signingSeed))
            for secret in [w, r, s] {
                let keys = secret.keys
                XCTAssertEqual(keys.folderPublicKey, hex(v.folderPublicKey))
                XCTAssertEqual(keys.folderID, hex(v.folderID))
                XCTAssertEqual(keys.sessionPSK, hex(v.sessionPSK))
            }
            for secret in [w, r] {
                let keys = secret.keys
                XCTAssertEqual(keys.chunkIDKey, hex(v.chunkIDKey))
                XCTAssertEqual(keys.manifestKey, hex(v.manifestKey))
                XCTAssertEqual(keys.chunkKey, hex(v.chunkKey))
                let gear = try XCTUnwrap(keys.chunkerGear)
                XCTAssertEqual(gear.prefix(4).map { String(format: "%016llx", $0) }, v.gearFirst4)
                XCTAssertEqual(String(format: "%016llx", gear[255]), v.gearLast)
            }
        }
    }

    func test_parsing_shouldRoundTripEveryKind() throws {
        for v in try loadVectors() {
            for text in [v.rwText, v.roText, v.stText] {
                let parsed = try FolderSecret(parsing: "  \(text)\n")
                XCTAssertEqual(parsed.text, text)
                XCTAssertEqual(parsed.keys.folderID, hex(v.folderID))
            }
            XCTAssertEqual(try FolderSecret(parsing: v.rwText.uppercased().replacingOccurrences(of: "SYNCD-RW-", with: "syncd-rw-")).text,
                           v.rwText, "the base32 body reads in either case")
        }
        let fresh = FolderSecret.generate()
        XCTAssertEqual(try FolderSecret(parsing: fresh.text), fresh)
        XCTAssertNotEqual(FolderSecret.generate(), fresh)
    }

    func test_accessKinds_shouldHoldOnlyTheirKeys() throws {
        let w = FolderSecret.generate()
        let rw = w.keys, ro = try w.readOnly().keys, st = w.storage().keys
        XCTAssertEqual([rw.access, ro.access, st.access], [.readWrite, .readOnly, .storage])
        XCTAssertNotNil(rw.signingKey)
        XCTAssertNil(ro.signingKey)
        XCTAssertNil(st.signingKey)
        XCTAssertNil(st.chunkerGear)
        XCTAssertNil(st.chunkIDKey)
        XCTAssertNil(st.manifestKey)
        XCTAssertNil(st.chunkKey)
        // The folder key signs; everyone verifies with the public key the weaker secrets carry.
        let message = Array("manifest".utf8)
        let signature = try XCTUnwrap(rw.signingKey).signature(for: message)
        let publicKey = try Curve25519.Signing.PublicKey(rawRepresentation: st.folderPublicKey)
        XCTAssertTrue(publicKey.isValidSignature(signature, for: message))
    }

    func test_chain_shouldBeOneWay() throws {
        let w = FolderSecret.generate()
        let r = try w.readOnly(), s = w.storage()
        XCTAssertThrowsError(try s.readOnly()) { XCTAssertEqual($0 as? SecretError, .cannotDerive(from: .storage, to: .readOnly)) }
        XCTAssertEqual(try r.readOnly(), r)
        XCTAssertEqual(s.storage(), s)
        XCTAssertEqual(Set([w.secret, r.secret, s.secret]).count, 3)
        XCTAssertNotEqual(w.keys.sessionPSK, w.keys.chunkIDKey)
    }

    /// Every single-character substitution of a secret is refused: a typo never becomes a new folder.
    func test_everySingleCharacterTypo_shouldBeRejected() throws {
        let v = try XCTUnwrap(loadVectors().first)
        for text in [v.rwText, v.stText] {
            let chars = Array(text)
            for i in 9..<chars.count {
                for replacement in ["a", "q", "7"] where String(chars[i]) != replacement {
                    var typo = chars
                    typo[i] = Character(replacement)
                    XCTAssertThrowsError(try FolderSecret(parsing: String(typo)), "typo at \(i) accepted")
                }
            }
        }
    }

    func test_malformedText_shouldGiveClearErrors() throws {
        let v = try XCTUnwrap(loadVectors().first)
        func error(_ text: String) -> SecretError? {
            do { _ = try FolderSecret(parsing: text); return nil } catch { return error }
        }
        XCTAssertEqual(error("   "), .empty)
        XCTAssertEqual(error("hunter2"), .unknownPrefix)
        XCTAssertEqual(error("syncd-rw-abc1"), .invalidCharacter("1", position: 13))
        XCTAssertEqual(error(String(v.rwText.dropLast())), .wrongLength(kind: .readWrite, expected: 60, actual: 59))
        XCTAssertEqual(error(v.rwText + v.rwText.dropFirst(9)), .wrongLength(kind: .readWrite, expected: 60, actual: 120))
        // Changing only the kind prefix is caught by the length, then by the checksum (it covers the prefix).
        XCTAssertEqual(error(v.roText.replacingOccurrences(of: "syncd-ro-", with: "syncd-rw-")),
                       .wrongLength(kind: .readWrite, expected: 60, actual: 111))
        XCTAssertEqual(error(v.roText.replacingOccurrences(of: "syncd-ro-", with: "syncd-st-")), .checksumMismatch)
        // A future format version is named as such, not as a typo.
        let payload = [UInt8(2)] + [UInt8](repeating: 0, count: 32)
        let future = "syncd-rw-" + Base32.encode(payload + FolderSecret.checksum(kind: .readWrite, payload: payload))
        XCTAssertEqual(error(future), .unsupportedVersion(2))
        XCTAssertTrue(SecretError.checksumMismatch.description.contains("mistyped"))
    }

    func test_base32_shouldRoundTripAndRejectNonCanonicalText() {
        for n in 0..<12 {
            let bytes = (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
            XCTAssertEqual(Base32.decode(Base32.encode(bytes)), bytes)
        }
        XCTAssertEqual(Base32.encode(Array("foobar".utf8)), "mzxw6ytboi")   // RFC 4648 §10
        XCTAssertEqual(Base32.decode("MZXW6YTBOI"), Array("foobar".utf8))
        XCTAssertEqual(Base32.decode("my"), Array("f".utf8))
        XCTAssertNil(Base32.decode("mz"), "non-zero padding bits")
        XCTAssertNil(Base32.decode("mz0"))
    }
}

func hex(_ text: String) -> [UInt8] {
    var out: [UInt8] = []
    var chars = text.utf8.makeIterator()
    while let hi = chars.next(), let lo = chars.next() {
        out.append(UInt8(String(decoding: [hi, lo], as: UTF8.self), radix: 16)!)
    }
    return out
}
