// TEMP stand-in until the real Base32 lands.
public enum Base32 {
    public static let alphabetUpper = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567".utf8)
    static let lower = Array("abcdefghijklmnopqrstuvwxyz234567".utf8)
    public static func encode(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []; var buffer = 0, bits = 0
        for b in bytes { buffer = buffer << 8 | Int(b); bits += 8; while bits >= 5 { out.append(lower[(buffer >> (bits - 5)) & 31]); bits -= 5 } }
        if bits > 0 { out.append(lower[(buffer << (5 - bits)) & 31]) }
        return String(decoding: out, as: UTF8.self)
    }
    public static func decode(_ text: String) -> [UInt8]? {
        var out: [UInt8] = []; var buffer = 0, bits = 0
        for c in text.lowercased().utf8 { guard let v = lower.firstIndex(of: c) else { return nil }; buffer = buffer << 5 | v; bits += 5; if bits >= 8 { out.append(UInt8((buffer >> (bits - 8)) & 255)); bits -= 8 } }
        return out
    }
}
