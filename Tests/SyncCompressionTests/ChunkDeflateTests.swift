import XCTest
@testable import SyncCompression

final class ChunkDeflateTests: XCTestCase {
    /// Log lines: what the issue calls text-like data.
    func textChunk(_ size: Int = 64 << 10) -> [UInt8] {
        var out: [UInt8] = []
        var n = 0
        while out.count < size {
            out += Array("2026-05-01T12:\(n % 60):\(n % 7)Z INFO request id=\(n * 7919 % 100_000) path=/api/items/\(n % 313) status=200 ms=\(n % 97)\n".utf8)
            n += 1
        }
        return Array(out.prefix(size))
    }

    func randomChunk(_ size: Int = 64 << 10) -> [UInt8] {
        var g = SystemRandomNumberGenerator()
        return (0..<size).map { _ in UInt8.random(in: 0...255, using: &g) }
    }

    func test_text_deflatesAndInflatesBackExactly() throws {
        let chunk = textChunk()
        let packed = try XCTUnwrap(ChunkDeflate.deflateIfItPays(chunk))
        XCTAssertLessThan(packed.count, chunk.count * 4 / 10, "log lines cross in well under 40 % of their size")
        XCTAssertEqual(try ChunkDeflate.inflate(packed, rawSize: chunk.count), chunk)
    }

    func test_randomData_isNotDeflated_andFailsTheSampleTest() {
        let chunk = randomChunk()
        XCTAssertFalse(ChunkDeflate.looksCompressible(chunk))
        XCTAssertGreaterThan(ChunkDeflate.entropy(ofSampleOf: chunk), 7.8)
        XCTAssertNil(ChunkDeflate.deflateIfItPays(chunk))
    }

    func test_deflate_isNil_whenItDoesNotFitTheLimit() {
        let chunk = randomChunk(8192)
        XCTAssertNil(ChunkDeflate.deflate(chunk, limit: 8000), "random bytes do not get 10 % smaller")
        XCTAssertNotNil(ChunkDeflate.deflate(chunk, limit: 9000), "stored blocks cost a few bytes over the input")
    }

    func test_tinyChunks_goAsTheyAre() {
        XCTAssertNil(ChunkDeflate.deflateIfItPays(Array(repeating: 0x41, count: ChunkDeflate.minimumSize - 1)))
        XCTAssertNotNil(ChunkDeflate.deflateIfItPays(Array(repeating: 0x41, count: ChunkDeflate.minimumSize)))
    }

    func test_inflate_refusesMoreThanRawSize_aZipBomb() throws {
        let bomb = try XCTUnwrap(ChunkDeflate.deflate([UInt8](repeating: 0, count: 1 << 20), limit: 1 << 20))
        XCTAssertLessThan(bomb.count, 8192, "1 MiB in a few KiB: what a hostile peer can send")
        XCTAssertThrowsError(try ChunkDeflate.inflate(bomb, rawSize: 4096)) { XCTAssertEqual($0 as? ChunkDeflate.InflateError, .tooLong) }
        XCTAssertThrowsError(try ChunkDeflate.inflate(bomb, rawSize: (1 << 20) - 1)) { XCTAssertEqual($0 as? ChunkDeflate.InflateError, .tooLong) }
        XCTAssertEqual(try ChunkDeflate.inflate(bomb, rawSize: 1 << 20).count, 1 << 20)
    }

    func test_inflate_refusesLessThanRawSize() throws {
        let chunk = textChunk(10_000)
        let packed = try XCTUnwrap(ChunkDeflate.deflateIfItPays(chunk))
        XCTAssertThrowsError(try ChunkDeflate.inflate(packed, rawSize: 10_001)) { XCTAssertEqual($0 as? ChunkDeflate.InflateError, .tooShort(10_000)) }
    }

    /// A cut that loses output is refused. compress-nio does not report whether the stream's end
    /// was seen, so a cut of only the last bits (the final block's end code) that still yields every
    /// byte is taken; those bytes are exactly the chunk, and the pull verifies them by chunk id.
    func test_inflate_refusesTruncatedStreams_atEveryLength() throws {
        let chunk = textChunk(20_000)
        let packed = try XCTUnwrap(ChunkDeflate.deflateIfItPays(chunk))
        var accepted: [Int] = []
        for cut in 0..<packed.count {
            if let out = try? ChunkDeflate.inflate(Array(packed.prefix(cut)), rawSize: chunk.count) {
                XCTAssertEqual(out, chunk, "cut at \(cut)")
                accepted.append(cut)
            }
        }
        XCTAssertLessThanOrEqual(accepted.count, 2, "only cuts in the last bytes: \(accepted) of \(packed.count)")
        XCTAssertTrue(accepted.allSatisfy { $0 >= packed.count - 2 }, "\(accepted) of \(packed.count)")
    }

    func test_inflate_refusesTrailingBytes_andGarbage() throws {
        let chunk = textChunk(20_000)
        let packed = try XCTUnwrap(ChunkDeflate.deflateIfItPays(chunk))
        XCTAssertThrowsError(try ChunkDeflate.inflate(packed + [0], rawSize: chunk.count)) { XCTAssertEqual($0 as? ChunkDeflate.InflateError, .trailingBytes) }
        XCTAssertThrowsError(try ChunkDeflate.inflate([0xFF, 0xFF, 0xFF, 0xFF], rawSize: 100))
        XCTAssertThrowsError(try ChunkDeflate.inflate([], rawSize: 100))
    }

    func test_streamsAreReused_concurrently_withoutMixingChunks() {
        let chunks = (0..<32).map { i in textChunk(4096 + i * 1000) }
        DispatchQueue.concurrentPerform(iterations: 256) { i in
            let chunk = chunks[i % chunks.count]
            guard let packed = ChunkDeflate.deflateIfItPays(chunk) else { return XCTFail("text must deflate") }
            XCTAssertEqual(try? ChunkDeflate.inflate(packed, rawSize: chunk.count), chunk)
        }
    }
}
