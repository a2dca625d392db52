package s3

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Options configure Open (storage.s3 in Berth's configuration).
type Options struct {
	// Endpoint is the S3 API's URL; empty means AWS.
	Endpoint string
	Region   string
	Bucket   string
	Prefix   string
	// PathStyle addresses buckets as endpoint/bucket (MinIO, Ceph,
	// versitygw) rather than bucket.endpoint.
	PathStyle bool
	// AccessKey and SecretKey are static credentials; when empty, the
	// standard chain applies: environment, shared files (CredentialsFile,
	// Profile), web identity (IRSA), container and instance metadata.
	AccessKey, SecretKey     string
	CredentialsFile, Profile string
	InsecureSkipVerify       bool
	// CAFile is a PEM bundle of authorities to trust (added to AWS_CA_BUNDLE
	// handling of the SDK: this one wins when both are set).
	CAFile   string
	PartSize int64
	// Timeouts bound the calls to S3; a zero field takes its default.
	// Not in Berth's configuration: tests lower them.
	Timeouts Timeouts
}

// Timeouts bound the calls to S3, so that an endpoint that stops
// answering fails the request that waits on it (503 with a Retry-After)
// instead of holding it, its upload's claim and its part buffer for as
// long as TCP retransmits (about 15 minutes) or forever.
type Timeouts struct {
	// ResponseHeader is how long a request waits for the response's
	// headers once it is sent (http.Transport.ResponseHeaderTimeout);
	// default a minute.
	ResponseHeader time.Duration
	// Call and MinRate bound each call that sends or copies bytes (a
	// part, a tail, a small file, a copy, the completion of a multipart
	// upload), retries included: Call plus its size at MinRate bytes per
	// second. Calls without a size get Call: a HEAD, a listing (each
	// page of one), a deletion, the start or abort of a multipart upload.
	// Defaults: a minute and 1 MiB/s (a part of 10 MiB gets 70 s, a
	// 1 GiB part copy about 18 minutes).
	Call    time.Duration
	MinRate int64
}

// withDefaults fills the zero fields with their defaults.
func (to Timeouts) withDefaults() Timeouts {
	if to.ResponseHeader <= 0 {
		to.ResponseHeader = defaultResponseHeaderTimeout
	}
	if to.Call <= 0 {
		to.Call = defaultCallTimeout
	}
	if to.MinRate <= 0 {
		to.MinRate = defaultMinRate
	}
	return to
}

// Defaults of Timeouts.
const (
	defaultResponseHeaderTimeout = time.Minute
	defaultCallTimeout           = time.Minute
	defaultMinRate               = 1 << 20
)

// Open builds an S3 client from o and returns the driver. It does not
// contact the server: Stat("/") (the readiness probe) checks the bucket.
func Open(ctx context.Context, o Options) (*Driver, error) {
	region := o.Region
	if region == "" && o.Endpoint != "" {
		region = "us-east-1" // S3-compatible servers mostly ignore it, SigV4 needs one
	}
	to := o.Timeouts.withDefaults()
	hc := awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
		// The SDK sets none for S3: a request to an endpoint that took it
		// and never answers would wait forever.
		tr.ResponseHeaderTimeout = to.ResponseHeader
		if o.InsecureSkipVerify {
			if tr.TLSClientConfig == nil {
				tr.TLSClientConfig = &tls.Config{}
			}
			tr.TLSClientConfig.InsecureSkipVerify = true
		}
	})
	opts := []func(*config.LoadOptions) error{
		config.WithHTTPClient(hc),
		// Recent SDKs send CRC checksums on every upload, which several
		// S3-compatible servers refuse (GitLab's registry turned them off
		// for MinIO): only where the API requires them.
		config.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenRequired),
		config.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenRequired),
	}
	if region != "" {
		opts = append(opts, config.WithRegion(region))
	}
	if o.AccessKey != "" || o.SecretKey != "" {
		opts = append(opts, config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(o.AccessKey, o.SecretKey, "")))
	}
	if o.CredentialsFile != "" {
		opts = append(opts, config.WithSharedCredentialsFiles([]string{o.CredentialsFile}))
	}
	if o.Profile != "" {
		opts = append(opts, config.WithSharedConfigProfile(o.Profile))
	}
	if o.CAFile != "" {
		f, err := os.Open(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("s3: tls.caFile: %w", err)
		}
		defer f.Close()
		opts = append(opts, config.WithCustomCABundle(f))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("s3: load AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		return nil, fmt.Errorf("s3: no region: set storage.s3.region (or AWS_REGION)")
	}
	c := s3.NewFromConfig(cfg, func(so *s3.Options) {
		so.UsePathStyle = o.PathStyle
		if o.Endpoint != "" {
			so.BaseEndpoint = aws.String(o.Endpoint)
		}
	})
	d, err := NewWithClient(c, o.Bucket, o.Prefix, o.PartSize)
	if err != nil {
		return nil, err
	}
	d.timeouts = to
	return d, nil
}
