// TEMP stand-in until the real FastCDC lands (same API).
public struct FastCDC: Sendable {
    public static let version: UInt8 = 1
    public struct Parameters: Sendable, Equatable {
        public var minSize: Int, avgSize: Int, maxSize: Int
        public static let `default` = Parameters(minSize: 16384, avgSize: 65536, maxSize: 262144)
        public init(minSize: Int, avgSize: Int, maxSize: Int) { self.minSize = minSize; self.avgSize = avgSize; self.maxSize = maxSize }
    }
    let gear: [UInt64]
    public let parameters: Parameters
    public init(gear: [UInt64], parameters: Parameters = .default) { self.gear = gear; self.parameters = parameters }
    public func cut(_ buffer: UnsafeRawBufferPointer, isFinal: Bool) -> Int {
        let n = min(buffer.count, parameters.maxSize)
        if n <= parameters.minSize { return n }
        var h: UInt64 = 0
        let maskS: UInt64 = 0x0003_5907_0353_0000, maskL: UInt64 = 0x0000_d900_0353_0000
        var i = parameters.minSize
        while i < n {
            h = (h << 1) &+ gear[Int(buffer[i])]
            if h & (i < parameters.avgSize ? maskS : maskL) == 0 { return i + 1 }
            i += 1
        }
        return n
    }
    public func chunkLengths(of bytes: [UInt8]) -> [Int] {
        bytes.withUnsafeBytes { b in
            var out: [Int] = []; var at = 0
            while at < b.count { let n = cut(UnsafeRawBufferPointer(rebasing: b[at...]), isFinal: true); out.append(n); at += n }
            return out
        }
    }
    public static func testGear(seed: UInt64) -> [UInt64] {
        var x = seed
        return (0..<256).map { _ in
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }
}
