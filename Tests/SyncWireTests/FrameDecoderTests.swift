@testable import SyncWire
import XCTest

final class FrameDecoderTests: XCTestCase {
    func test_frames_roundTrip_whenDripFedOrBatched() throws {
        let bodies: [[UInt8]] = [[1], Array(repeating: 7, count: 300), Array(0..<255)]
        let stream = bodies.flatMap(FrameDecoder.encode)
        // One byte at a time.
        var d = FrameDecoder()
        var got: [[UInt8]] = []
        for b in stream {
            d.feed([b])
            while let f = try d.next() { got.append(f) }
        }
        XCTAssertEqual(got, bodies)
        XCTAssertEqual(d.buffered, 0)
        // All at once.
        var e = FrameDecoder()
        e.feed(stream)
        got = []
        while let f = try e.next() { got.append(f) }
        XCTAssertEqual(got, bodies)
    }

    func test_oversizedLength_failsBeforeBufferingTheBody() {
        var d = FrameDecoder(maxFrameSize: 1000)
        d.feed([0, 0, 0x03, 0xE9])  // 1001
        XCTAssertThrowsError(try d.next()) { XCTAssertEqual($0 as? WireError, .frameTooLarge(1001, limit: 1000)) }
        var h = FrameDecoder()
        h.feed([0xFF, 0xFF, 0xFF, 0xFF])
        XCTAssertThrowsError(try h.next())
    }

    func test_emptyFrame_isRejected_andTruncatedWaits() throws {
        var d = FrameDecoder()
        d.feed([0, 0, 0, 0])
        XCTAssertThrowsError(try d.next()) { XCTAssertEqual($0 as? WireError, .emptyFrame) }
        var t = FrameDecoder()
        t.feed([0, 0, 0, 5, 1, 2])
        XCTAssertNil(try t.next(), "a truncated frame waits for more bytes; EOF then closes the session")
    }

    func test_transport_sealOpen_countersAndRekeyStayInSync() throws {
        let k1 = [UInt8](repeating: 1, count: 32), k2 = [UInt8](repeating: 2, count: 32)
        var a = TransportCipher(sendKey: k1, receiveKey: k2, rekeyInterval: 3)
        var b = TransportCipher(sendKey: k2, receiveKey: k1, rekeyInterval: 3)
        var seen = Set<[UInt8]>()
        for i in 0..<10 {
            let msg = Array("message \(i)".utf8)
            let sealed = a.seal(msg)
            XCTAssertEqual(try b.open(sealed), msg)
            XCTAssertEqual(try a.open(b.seal(msg)), msg)
            seen.insert(sealed)
        }
        XCTAssertEqual(seen.count, 10)
        XCTAssertEqual(a.sendCounter, 10)
        // Same plaintext at the same counter gives a different ciphertext after a rekey.
        var fresh = TransportCipher(sendKey: k1, receiveKey: k2, rekeyInterval: 3)
        var norekey = TransportCipher(sendKey: k1, receiveKey: k2, rekeyInterval: 1000)
        for _ in 0..<3 { _ = fresh.seal([0]); _ = norekey.seal([0]) }
        XCTAssertNotEqual(fresh.seal([9]), norekey.seal([9]))
    }

    func test_transport_rejectsReplayReorderTamperAndShortFrames() throws {
        let k1 = [UInt8](repeating: 3, count: 32), k2 = [UInt8](repeating: 4, count: 32)
        var a = TransportCipher(sendKey: k1, receiveKey: k2)
        var b = TransportCipher(sendKey: k2, receiveKey: k1)
        let f0 = a.seal([1]), f1 = a.seal([2])
        XCTAssertThrowsError(try b.open(f1), "reordered frame")
        var b2 = TransportCipher(sendKey: k2, receiveKey: k1)
        XCTAssertEqual(try b2.open(f0), [1])
        XCTAssertThrowsError(try b2.open(f0), "replayed frame")
        var tampered = f1
        tampered[0] ^= 1
        var b3 = TransportCipher(sendKey: k2, receiveKey: k1)
        _ = try b3.open(f0)
        XCTAssertThrowsError(try b3.open(tampered))
        XCTAssertThrowsError(try b.open([1, 2, 3]))
    }
}
