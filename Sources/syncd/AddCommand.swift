import ArgumentParser
import SyncDaemon

struct AddCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add",
        abstract: "Share a folder: `--secret` alone creates a new read-write secret, `--secret SECRET` joins one.",
        discussion: """
            The generated secret is printed as the last token on stdout. A missing directory is created. \
            Adding a folder that is already shared with the same secret changes nothing and succeeds.
            """)

    @OptionGroup var home: HomeOption

    @Argument(help: "The folder to share.")
    var path: String

    @Flag(name: .customLong("secret"), help: "Use a secret: a new one, or the SECRET argument that follows.")
    var useSecret = false

    @Argument(help: "An existing secret (read-write, read-only or storage) to join with.")
    var secret: String?

    func validate() throws {
        guard useSecret else { throw ValidationError("say --secret to create a new folder secret, or --secret SECRET to join one") }
    }

    func run() throws {
        let response = try call(ControlRequest(command: .add, path: absolutePath(path), secret: secret,
                                               generate: secret == nil), home: home.resolved)
        if response.alreadyShared == true {
            print("Already sharing \(absolutePath(path)) (folder \(response.folderId ?? "?"))")
        } else if let generated = response.secret {
            print("Shared \(absolutePath(path)) (folder \(response.folderId ?? "?")). Keep this read-write secret safe:")
            print(generated)
        } else {
            print("Joined \(absolutePath(path)) to folder \(response.folderId ?? "?")")
        }
    }
}
