import java.io.FileInputStream;
import java.io.InputStream;
import java.net.URL;
import java.security.KeyStore;
import java.util.Collections;
import javax.net.ssl.HttpsURLConnection;

/**
 * Loads a PKCS#12 truststore as Java's TLS stack does (no password), counts
 * its trusted-certificate entries, then fetches a URL with the truststore
 * given by javax.net.ssl.trustStore.
 * Usage: java TrustCheck.java <truststore.p12> <https-url>
 */
public class TrustCheck {
    public static void main(String[] args) throws Exception {
        KeyStore store = KeyStore.getInstance("PKCS12");
        try (InputStream in = new FileInputStream(args[0])) {
            store.load(in, null);
        }
        int trusted = 0;
        for (String alias : Collections.list(store.aliases())) {
            if (store.isCertificateEntry(alias)) {
                trusted++;
            }
        }
        System.out.println("trusted " + trusted);
        HttpsURLConnection connection = (HttpsURLConnection) new URL(args[1]).openConnection();
        System.out.println("status " + connection.getResponseCode());
    }
}
